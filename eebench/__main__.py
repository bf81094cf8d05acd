from eebench.cli import main

main()
