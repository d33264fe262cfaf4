import sys

from hato.cli.main import main

sys.exit(main(["hato", *sys.argv[1:]]))
