"""`pacs-embed extract` with a pause after each batch, so that a test can interrupt it mid-run."""
import sys
import time

import importlib

ex = importlib.import_module("pacs_embed.models")
from pacs_embed.cli import main

_encode = ex.embed_images


def slow_encode(model, pixels):
    time.sleep(0.25)
    return _encode(model, pixels)


ex.embed_images = slow_encode
sys.exit(main(sys.argv[1:]))
