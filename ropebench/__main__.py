from ropebench.cli.app import main

main()
