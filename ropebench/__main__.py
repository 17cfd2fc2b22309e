from ropebench.cli import main

main()
