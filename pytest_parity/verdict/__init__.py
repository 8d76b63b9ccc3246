"""Deciding the verdict: numpy only, no framework imported at module level.

compare (element-wise comparison of trees), tolerances (the gradient tolerance per tensor), gradients (input and weight
gradients compared), weight_accounting (every trainable weight compared or named), timing (the speed gate), messages
(the failure text and its hints), and the diagnostics a failure runs before it is reported: float64_referee (is it the
model's own float32 rounding?) and near_ties (does the difference move with the inputs?).
"""
