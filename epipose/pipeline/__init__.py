"""The science of each DVC stage, one module per stage, named as the stage.

``stages/<stage>.py`` is the command line over ``epipose.pipeline.<stage>``. A stage module uses the
evaluation (every comparison with the ground truth), models, data and geometry packages and the
foundations, never another stage module.
"""
