from bpcr.cli import main

main()
