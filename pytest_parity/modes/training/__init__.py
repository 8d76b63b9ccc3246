"""Training checks (``parity.check_training``): a port trains the same, step by step, with the user's own optimizer and
loss.

    run.py            one training check, start to finish: carry weights, diff configurations, step both, compare
    sides.py          one side of the training, per framework: a standard step, the model's state, its settings
    dropout.py        the same Dropout masks on both sides (drawn once, injected into Keras and torch dropout)
    configuration.py  the static diff: optimizer, BatchNormalization, Dropout, loss and trainability conventions
    statistics.py     BatchNormalization's running variance in each framework's convention (biased vs unbiased)
    causes.py         the first step and tensor that diverge, and the known convention that most likely caused it

Port mode's pairing (modes/port) carries the weights across once; both models then train from the same start.
"""
