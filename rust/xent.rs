//! Cross-entropy over rows of bf16 logits, computed in f32 (the CPU path of
//! `fastbpe.lm.nn.cross_entropy` for bf16 logits): the log-sum-exp of each row, and the gradient
//! `(softmax - onehot) * grad_loss` rounded to bf16, each in one pass over the row without an f32
//! copy of the logits.

/// bf16 bits to f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// f32 to bf16 bits, rounding to nearest even, as torch's c10::BFloat16 does (NaN -> 0x7FC0).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return 0x7FC0;
    }
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// e^x in f32 (Cephes' expf: within 2 ulp of the exact value), written without branches on the
/// value so that loops over it vectorise. NaN gives NaN, -inf (and below -87) 0, above 88.7 inf.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let k = (xc * LOG2E + 0.5).floor();
    let r = xc - k * LN2_HI - k * LN2_LO;
    let poly = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = poly * (r * r) + r + 1.0;
    // 2^k through the exponent bits: k is in [-126, 127] after the clamp.
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    let y = e_r * scale;
    let y = if x < -87.0 { 0.0 } else { y };
    let y = if x > 88.72 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

const LANES: usize = 16;

/// log(sum(exp(row))) in f32, with torch.logsumexp's treatment of infinities (an infinite max is
/// not subtracted) and NaN propagation. The exponentials are summed in f64.
pub fn logsumexp_row(row: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has the features the function was compiled for (checked above).
            return unsafe { logsumexp_row_avx512(row) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has both features the function was compiled for (checked above).
            return unsafe { logsumexp_row_avx2(row) };
        }
    }
    logsumexp_row_body(row)
}

/// The same instructions' results as the portable build (no operation is contracted into an
/// FMA), only in wider vectors, with vector floor.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn logsumexp_row_avx2(row: &[u16]) -> f32 {
    logsumexp_row_body(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn logsumexp_row_avx512(row: &[u16]) -> f32 {
    logsumexp_row_body(row)
}

#[inline(always)]
fn logsumexp_row_body(row: &[u16]) -> f32 {
    let blocks = row.chunks_exact(LANES);
    let tail = blocks.remainder();
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for block in blocks {
        for (m, &b) in maxes.iter_mut().zip(block) {
            let x = bf16_to_f32(b);
            *m = if x > *m { x } else { *m }; // a NaN shows up in the sum below
        }
    }
    let max = tail
        .iter()
        .map(|&b| bf16_to_f32(b))
        .chain(maxes)
        .fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
    let shift = if max.is_finite() { max } else { 0.0 };
    // f32 partial sums over short runs, added up in f64: vector-wide and accurate.
    let mut total = 0.0f64;
    for run in row.chunks(LANES * 64) {
        let mut sums = [0.0f32; LANES];
        let blocks = run.chunks_exact(LANES);
        let tail = blocks.remainder();
        for block in blocks {
            for (s, &b) in sums.iter_mut().zip(block) {
                *s += exp_f32(bf16_to_f32(b) - shift);
            }
        }
        let tail_sum: f32 = tail.iter().map(|&b| exp_f32(bf16_to_f32(b) - shift)).sum();
        total += sums.iter().map(|&s| s as f64).sum::<f64>() + tail_sum as f64;
    }
    (total as f32).ln() + shift
}

/// One row's gradient: `(exp(x - lse) - [j == target]) * scale`, rounded to bf16.
pub fn grad_row(row: &[u16], target: usize, lse: f32, scale: f32, out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has the features the function was compiled for (checked above).
            return unsafe { grad_row_avx512(row, target, lse, scale, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has both features the function was compiled for (checked above).
            return unsafe { grad_row_avx2(row, target, lse, scale, out) };
        }
    }
    grad_row_body(row, target, lse, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn grad_row_avx2(row: &[u16], target: usize, lse: f32, scale: f32, out: &mut [u16]) {
    grad_row_body(row, target, lse, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn grad_row_avx512(row: &[u16], target: usize, lse: f32, scale: f32, out: &mut [u16]) {
    grad_row_body(row, target, lse, scale, out)
}

#[inline(always)]
fn grad_row_body(row: &[u16], target: usize, lse: f32, scale: f32, out: &mut [u16]) {
    for (o, &b) in out.iter_mut().zip(row) {
        *o = f32_to_bf16(exp_f32(bf16_to_f32(b) - lse) * scale);
    }
    if let (Some(o), Some(&b)) = (out.get_mut(target), row.get(target)) {
        *o = f32_to_bf16((exp_f32(bf16_to_f32(b) - lse) - 1.0) * scale);
    }
}

/// The shapes of a call do not fit together, or a target is not a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XentError {
    Shape(String),
    Target {
        row: usize,
        target: i64,
        vocab: usize,
    },
}

impl std::fmt::Display for XentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XentError::Shape(s) => f.write_str(s),
            XentError::Target { row, target, vocab } => write!(
                f,
                "target {target} of row {row} is not in [0, {vocab}): the vocabulary is {vocab}"
            ),
        }
    }
}

fn check_rows(logits: &[u16], vocab: usize, rows: usize) -> Result<(), XentError> {
    if vocab == 0 || logits.len() != rows * vocab {
        return Err(XentError::Shape(format!(
            "{} logits are not {rows} rows of {vocab}",
            logits.len()
        )));
    }
    Ok(())
}

/// The rows of `threads` (>= 1) parts of about equal size, for std::thread::scope.
fn split_rows(rows: usize, vocab: usize, threads: usize) -> usize {
    // Below about a million logits a second thread costs more than it saves.
    let threads = threads.clamp(1, 1 + rows * vocab / (1 << 20));
    rows.div_ceil(threads).max(1)
}

/// `lse[i]` = log-sum-exp of row `i` of `logits` (rows of `vocab` bf16 values).
pub fn logsumexp_rows(
    logits: &[u16],
    vocab: usize,
    lse: &mut [f32],
    threads: usize,
) -> Result<(), XentError> {
    check_rows(logits, vocab, lse.len())?;
    let per = split_rows(lse.len(), vocab, threads);
    let work = |(rows, out): (&[u16], &mut [f32])| {
        for (row, o) in rows.chunks_exact(vocab).zip(out) {
            *o = logsumexp_row(row);
        }
    };
    let mut parts = logits.chunks(per * vocab).zip(lse.chunks_mut(per));
    let first = parts.next();
    std::thread::scope(|s| {
        for part in parts {
            s.spawn(move || work(part));
        }
        if let Some(part) = first {
            work(part);
        }
    });
    Ok(())
}

/// `grad` = `(softmax(logits) - onehot(targets)) * grad_loss[row]` in bf16, from each row's
/// `lse` (as `logsumexp_rows` gives it).
pub fn grad_rows(
    logits: &[u16],
    vocab: usize,
    targets: &[i64],
    lse: &[f32],
    grad_loss: &[f32],
    grad: &mut [u16],
    threads: usize,
) -> Result<(), XentError> {
    let rows = targets.len();
    check_rows(logits, vocab, rows)?;
    if lse.len() != rows || grad_loss.len() != rows || grad.len() != logits.len() {
        return Err(XentError::Shape(format!(
            "{rows} targets, {} log-sum-exps, {} incoming grads and {} grads for {} logits",
            lse.len(),
            grad_loss.len(),
            grad.len(),
            logits.len()
        )));
    }
    if let Some((row, &target)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t < 0 || t as u64 >= vocab as u64)
    {
        return Err(XentError::Target { row, target, vocab });
    }
    let per = split_rows(rows, vocab, threads);
    let work = |(logits, grad): (&[u16], &mut [u16]), (targets, lse, grad_loss): RowArgs<'_>| {
        let rows = logits.chunks_exact(vocab).zip(grad.chunks_exact_mut(vocab));
        let args = targets.iter().zip(lse).zip(grad_loss);
        for ((row, out), ((&t, &l), &s)) in rows.zip(args) {
            grad_row(row, t as usize, l, s, out); // t is in [0, vocab): checked above
        }
    };
    let row_args = targets
        .chunks(per)
        .zip(lse.chunks(per))
        .zip(grad_loss.chunks(per))
        .map(|((t, l), g)| (t, l, g));
    let mut parts = logits
        .chunks(per * vocab)
        .zip(grad.chunks_mut(per * vocab))
        .zip(row_args);
    let first = parts.next();
    std::thread::scope(|s| {
        for (data, args) in parts {
            s.spawn(move || work(data, args));
        }
        if let Some((data, args)) = first {
            work(data, args);
        }
    });
    Ok(())
}

type RowArgs<'a> = (&'a [i64], &'a [f32], &'a [f32]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps() {
        for i in -1990..=2000 {
            let x = i as f32 * 0.0437;
            let want = (x as f64).exp() as f32;
            let got = exp_f32(x);
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(ulps <= 2, "x={x} got {got} want {want}");
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: even (1.0) wins.
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(f32_to_bf16(f32::NAN), 0x7FC0);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
    }

    #[test]
    fn logsumexp_matches_f64_and_torch_on_infinities() {
        let row: Vec<u16> = (0..37)
            .map(|i| f32_to_bf16((i as f32 - 18.0) * 0.7))
            .collect();
        let want = row
            .iter()
            .map(|&b| (bf16_to_f32(b) as f64).exp())
            .sum::<f64>()
            .ln();
        assert!((logsumexp_row(&row) as f64 - want).abs() < 1e-5);
        let inf = f32_to_bf16(f32::INFINITY);
        let ninf = f32_to_bf16(f32::NEG_INFINITY);
        assert_eq!(logsumexp_row(&[inf, 0]), f32::INFINITY);
        assert_eq!(logsumexp_row(&[ninf, ninf]), f32::NEG_INFINITY);
        assert!(logsumexp_row(&[0, 0x7FC0]).is_nan());
    }

    #[test]
    fn rows_and_threads_agree_and_targets_are_checked() {
        let (rows, vocab) = (7, 300_000);
        let logits: Vec<u16> = (0..rows * vocab)
            .map(|i| f32_to_bf16(((i * 37 % 1000) as f32 - 500.0) * 0.01))
            .collect();
        let (mut one, mut two) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        logsumexp_rows(&logits, vocab, &mut one, 1).unwrap();
        logsumexp_rows(&logits, vocab, &mut two, 2).unwrap();
        assert_eq!(one, two);
        let targets: Vec<i64> = (0..rows as i64).collect();
        let scale = vec![0.5f32; rows];
        let (mut g1, mut g2) = (vec![0u16; logits.len()], vec![0u16; logits.len()]);
        grad_rows(&logits, vocab, &targets, &one, &scale, &mut g1, 1).unwrap();
        grad_rows(&logits, vocab, &targets, &one, &scale, &mut g2, 2).unwrap();
        assert_eq!(g1, g2);
        // Each row's gradient sums to about 0 (softmax sums to 1, minus the one-hot).
        let s: f32 = g1[..vocab].iter().map(|&b| bf16_to_f32(b)).sum();
        assert!(s.abs() < 1e-2, "{s}");
        let bad = vec![0i64, 1, 2, 3, 4, 5, vocab as i64];
        let e = grad_rows(&logits, vocab, &bad, &one, &scale, &mut g1, 1).unwrap_err();
        assert_eq!(
            e,
            XentError::Target {
                row: 6,
                target: vocab as i64,
                vocab
            }
        );
        assert!(logsumexp_rows(&logits, vocab + 1, &mut one, 1).is_err());
    }
}
