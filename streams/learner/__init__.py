"""`streamfer learn` and `streamfer report`: the learner's wiring is `app`, its pure core
`processor`; see the module docstrings."""
