"""``python -m demo.synthetic ...``: see ``demo.synthetic.cli``."""
import sys

from demo.synthetic.cli import main

main(sys.argv[1:])
