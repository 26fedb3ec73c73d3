"""The host side: what runs on a developer's machine or in CI, never in the init container.

`check`, `fix`, the compose and Kubernetes readers and the probe live here and may import
Docker's SDK or read compose output; nothing on the init container's `apply` path imports
from this package (tests/test_layout.py holds that line).
"""
