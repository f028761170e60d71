"""The applications on top of the library: the ``genpercept`` command line (``cli``), ``genpercept predict``
(``predict``), the notebook runner behind ``make reproduce`` (``reproduce``) and the runtime measurements of Table 1
(``runtime``). Nothing in the library imports them."""
