"""Function and config templates, shipped inside the installed package as ``edgecli.templates``."""
