"""``python -m demo.synthetic ...``: see ``demo.synthetic.cli``."""
from demo.synthetic.cli import main
from utils.cli import run_cli

run_cli(main)
