"""Run the demo: the paper's pipeline in miniature on the synthetic world (``demo/``, docs/demo.md).

    python demo.py --output_dir demo_out            # the full preset
    python demo.py --output_dir demo_out --preset quick   # a smoke run of every stage (the test suite's)
"""
from demo.pipeline import main
from utils.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
