"""ugd-kit: helpers shared by plugins (not a plugin: it registers nothing).

- :mod:`ugd_kit.weights`: find local weight files (never download) and read them, with one-line errors;
- :mod:`ugd_kit.images`: read target images and masks for guides;
- :mod:`ugd_kit.testing`: offline fixtures for guide tests (real photos, a tiny CLIP tokenizer).

Plugins import it and the kernel (``ugd_core``), never each other; the kernel never imports it.
"""
