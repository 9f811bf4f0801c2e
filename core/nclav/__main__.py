from nclav.cli import main

main(prog_name="nclav")
