"""One guidance method per file: the pure combining function (formula and paper in its docstring) and
its registry entry ``METHOD``. ``guidance.rules`` lists the entries; adding a method is one file here
and one line there.
"""
