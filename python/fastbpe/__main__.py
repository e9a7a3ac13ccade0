from fastbpe.cli import main

main()
