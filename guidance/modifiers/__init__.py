"""What acts on top of whichever guidance method is chosen: one file per modifier, each declaring its parameters,
the extra model evaluation it needs, the steps it acts on, what it does to the guided prediction and what it
refuses. ``guidance.rules`` lists them; adding one is a file here and a line there.
"""
