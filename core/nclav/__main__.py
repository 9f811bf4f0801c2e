from nclav.cli import main

main()
