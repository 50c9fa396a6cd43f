"""`oasis simulate`: a closed-loop world in which each day's published plan
drives the next day's plays (`jobs.simulate.loop`)."""
