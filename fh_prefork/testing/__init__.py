"""What applications and fh_prefork's own tests use to test against fh_prefork.

Never imported by the library at run time.
"""
