"""The ``mova`` commands, one module each; ``mova_cli.main`` registers them.

Command modules import only click, ``mova_cli.options`` and light parts of ``mova.batch`` at the top,
so ``mova --help`` stays fast; what needs Pillow or torch is imported inside the command bodies.
"""
