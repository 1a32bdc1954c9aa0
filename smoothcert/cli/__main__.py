"""``python -m smoothcert.cli`` (used under torchrun)."""
from . import main

main()
