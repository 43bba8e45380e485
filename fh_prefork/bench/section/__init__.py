"""One module per benchmark section, each with ``run(bench)``; ``report.py`` drives them."""
