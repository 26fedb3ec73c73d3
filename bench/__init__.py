"""The volinit benchmark: volinit and its peers on identical trees, in one run, interleaved.

Run it as `python -m bench` (`make bench`); `python -m bench --help` lists the knobs.
"""
