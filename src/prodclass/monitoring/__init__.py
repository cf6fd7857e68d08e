"""Watching the model in production: the training reference profile, drift tests against the
prediction log, quality from reviewers' feedback, and the monitoring journal."""
