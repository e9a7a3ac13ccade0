//! AdamW's update over contiguous f32 slices in one pass per element (the CPU "fused" step of
//! `fastbpe.lm.optim.AdamW`).
//!
//! The arithmetic is that of the readable step in `python/fastbpe/lm/optim.py`, op for op, as
//! PyTorch's CPU kernels compute each op, so the results are bit for bit the same:
//!
//! ```text
//! p = p * decay                        # _foreach_mul_(params, 1 - lr*wd)
//! m = fma(w, g - m, m)                 # _foreach_lerp_(exp_avgs, grads, w = 1 - beta1), w < 0.5
//!   = fma(w - 1, g - m, g)             #   (lerp's other branch, w >= 0.5)
//! v = v * beta2                        # _foreach_mul_(exp_avg_sqs, beta2)
//! v = fma(c * g, g, v)                 # _foreach_addcmul_(exp_avg_sqs, grads, grads, c = 1 - beta2)
//! vmax = maximum(vmax, v)              # amsgrad only; NaN propagates, as torch.maximum
//! d = sqrt(v or vmax) / bias2_sqrt + eps
//! p = p + (step_size * m) / d          # _foreach_addcdiv_(params, exp_avgs, denom, step_size)
//! ```
//!
//! (torch's lerp and addcmul kernels compute with a fused multiply-add, on their vector and
//! scalar paths alike; addcdiv divides, so nothing fuses there.) Every scalar is rounded to f32
//! first, as torch rounds a Python float scalar to the tensor's dtype.

/// The step's scalars, each already rounded to f32 (see the module docs for where each goes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWScalars {
    /// `1 - lr * weight_decay` (1 when there is no weight decay: multiplying by 1 is exact).
    pub decay: f32,
    /// `1 - beta1`, the lerp weight of the first moment.
    pub avg_weight: f32,
    pub beta2: f32,
    /// `1 - beta2`.
    pub sq_weight: f32,
    /// `sqrt(1 - beta2^step)`.
    pub bias2_sqrt: f32,
    pub eps: f32,
    /// `-lr / (1 - beta1^step)`.
    pub step_size: f32,
}

/// One tensor's slices. `max_exp_avg_sq` is present for amsgrad.
pub struct AdamWSlices<'a> {
    pub param: &'a mut [f32],
    pub grad: &'a [f32],
    pub exp_avg: &'a mut [f32],
    pub exp_avg_sq: &'a mut [f32],
    pub max_exp_avg_sq: Option<&'a mut [f32]>,
}

/// The slices of one tensor do not all have the parameter's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthMismatch {
    pub param: usize,
    pub other: usize,
    pub what: &'static str,
}

impl std::fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has {} elements but the parameter has {}",
            self.what, self.other, self.param
        )
    }
}

impl AdamWSlices<'_> {
    fn check_lengths(&self) -> Result<(), LengthMismatch> {
        let n = self.param.len();
        let mut others = vec![
            ("grad", self.grad.len()),
            ("exp_avg", self.exp_avg.len()),
            ("exp_avg_sq", self.exp_avg_sq.len()),
        ];
        if let Some(vmax) = &self.max_exp_avg_sq {
            others.push(("max_exp_avg_sq", vmax.len()));
        }
        match others.into_iter().find(|&(_, len)| len != n) {
            Some((what, other)) => Err(LengthMismatch {
                param: n,
                other,
                what,
            }),
            None => Ok(()),
        }
    }
}

/// Updates `t.param`, `t.exp_avg`, `t.exp_avg_sq` (and `t.max_exp_avg_sq`) in place from
/// `t.grad`: one AdamW step. Uses the CPU's fused multiply-add instructions where it has them
/// (the same results, only faster than the software fallback).
pub fn adamw_step(t: AdamWSlices<'_>, s: &AdamWScalars) -> Result<(), LengthMismatch> {
    t.check_lengths()?;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has both features this function was compiled for (checked above).
            unsafe { adamw_step_avx2_fma(t, s) };
            return Ok(());
        }
    }
    adamw_step_portable(t, s);
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn adamw_step_avx2_fma(t: AdamWSlices<'_>, s: &AdamWScalars) {
    adamw_step_body(t, s)
}

fn adamw_step_portable(t: AdamWSlices<'_>, s: &AdamWScalars) {
    adamw_step_body(t, s)
}

/// Zipped iterators over slices of one length: the compiler vectorises the loop.
#[inline(always)]
fn adamw_step_body(t: AdamWSlices<'_>, s: &AdamWScalars) {
    let AdamWSlices {
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        max_exp_avg_sq,
    } = t;
    let moments = param.iter_mut().zip(grad).zip(exp_avg).zip(exp_avg_sq);
    match max_exp_avg_sq {
        None => {
            for (((p, g), m), v) in moments {
                update(p, *g, m, v, None, s);
            }
        }
        Some(vmax) => {
            for ((((p, g), m), v), x) in moments.zip(vmax) {
                update(p, *g, m, v, Some(x), s);
            }
        }
    }
}

/// One element's step, in the order of the module docs.
#[inline(always)]
fn update(p: &mut f32, g: f32, m: &mut f32, v: &mut f32, vmax: Option<&mut f32>, s: &AdamWScalars) {
    let param = *p * s.decay;
    *m = lerp(*m, g, s.avg_weight);
    let sq = (s.sq_weight * g).mul_add(g, *v * s.beta2); // addcmul: v + (c * g) * g
    *v = sq;
    let second = match vmax {
        Some(x) => {
            *x = maximum(*x, sq);
            *x
        }
        None => sq,
    };
    let denom = second.sqrt() / s.bias2_sqrt + s.eps;
    *p = param + (s.step_size * *m) / denom;
}

/// torch.lerp's formula (aten/src/ATen/native/Lerp.h): the branch keeps it exact at both ends.
#[inline(always)]
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let diff = end - start;
    if weight.abs() < 0.5 {
        weight.mul_add(diff, start)
    } else {
        (weight - 1.0).mul_add(diff, end)
    }
}

/// torch.maximum: NaN if either is NaN.
#[inline(always)]
fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalars() -> AdamWScalars {
        AdamWScalars {
            decay: 1.0 - 1e-3 * 0.1,
            avg_weight: 0.1,
            beta2: 0.95,
            sq_weight: 1.0 - 0.95,
            bias2_sqrt: (1.0f64 - 0.95f64.powi(3)).sqrt() as f32,
            eps: 1e-8,
            step_size: (-1e-3 / (1.0 - 0.9f64.powi(3))) as f32,
        }
    }

    /// The module docs' formulas, element by element, in f64 where f32 would round the same.
    fn reference(p: f32, g: f32, m: f32, v: f32, s: &AdamWScalars) -> (f32, f32, f32) {
        let p1 = p * s.decay;
        let m1 = ((s.avg_weight as f64) * ((g - m) as f64) + m as f64) as f32;
        let v0 = v * s.beta2;
        let v1 = (((s.sq_weight * g) as f64) * (g as f64) + v0 as f64) as f32;
        let d = v1.sqrt() / s.bias2_sqrt + s.eps;
        (p1 + (s.step_size * m1) / d, m1, v1)
    }

    #[test]
    fn every_length_matches_the_elementwise_formulas() {
        let s = scalars();
        for n in [0usize, 1, 15, 16, 17, 33, 100] {
            let grad: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.37).collect();
            let mut p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.31).sin()).collect();
            let mut m: Vec<f32> = (0..n).map(|i| (i as f32 * 0.17).cos() * 0.1).collect();
            let mut v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.05) * 0.01).collect();
            let want: Vec<_> = (0..n)
                .map(|i| reference(p[i], grad[i], m[i], v[i], &s))
                .collect();
            let t = AdamWSlices {
                param: &mut p,
                grad: &grad,
                exp_avg: &mut m,
                exp_avg_sq: &mut v,
                max_exp_avg_sq: None,
            };
            adamw_step(t, &s).unwrap();
            for i in 0..n {
                assert_eq!((p[i], m[i], v[i]), want[i], "n={n} i={i}");
            }
        }
    }

    #[test]
    fn amsgrad_divides_by_the_largest_second_moment() {
        let s = AdamWScalars {
            decay: 1.0,
            ..scalars()
        };
        let (mut p, g, mut m, mut v) = (
            vec![1.0f32; 3],
            vec![0.5f32; 3],
            vec![0.0f32; 3],
            vec![0.0f32; 3],
        );
        let mut vmax = vec![4.0f32, 0.0, f32::NAN];
        let t = AdamWSlices {
            param: &mut p,
            grad: &g,
            exp_avg: &mut m,
            exp_avg_sq: &mut v,
            max_exp_avg_sq: Some(&mut vmax),
        };
        adamw_step(t, &s).unwrap();
        assert_eq!(vmax[0], 4.0);
        assert_eq!(vmax[1], v[1]);
        assert!(vmax[2].is_nan() && p[2].is_nan());
        let d0 = 4.0f32.sqrt() / s.bias2_sqrt + s.eps;
        assert_eq!(p[0], 1.0 + (s.step_size * m[0]) / d0);
    }

    #[test]
    fn lerp_takes_the_far_branch_for_large_weights() {
        assert_eq!(lerp(3.0, 7.0, 1.0), 7.0);
        assert_eq!(lerp(3.0, 7.0, 0.0), 3.0);
        assert_eq!(lerp(1.0, 2.0, 0.75), 1.75);
    }

    #[test]
    fn mismatched_lengths_are_refused_untouched() {
        let (mut p, g, mut m, mut v) = (
            vec![1.0f32; 4],
            vec![0.5f32; 3],
            vec![0.0f32; 4],
            vec![0.0f32; 4],
        );
        let t = AdamWSlices {
            param: &mut p,
            grad: &g,
            exp_avg: &mut m,
            exp_avg_sq: &mut v,
            max_exp_avg_sq: None,
        };
        let e = adamw_step(t, &scalars()).unwrap_err();
        assert_eq!(
            e,
            LengthMismatch {
                param: 4,
                other: 3,
                what: "grad"
            }
        );
        assert_eq!(p, vec![1.0f32; 4]);
    }
}
