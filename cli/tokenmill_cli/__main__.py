from tokenmill_cli.main import main

main()
