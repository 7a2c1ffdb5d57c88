"""Run the demo: the paper's pipeline in miniature on the synthetic world (``demo/``, docs/demo.md).

    python demo.py --output_dir demo_out            # the full preset
    python demo.py --output_dir demo_out --preset quick   # a smoke run of every stage (the test suite's)
"""
import sys

from demo.pipeline import main

if __name__ == "__main__":
    main(sys.argv[1:])
