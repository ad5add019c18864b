"""The shared core every project builds on: params, runtime, the training loop, tracking,
registry, evaluation, plots, data sources, serving. It names no project; projects are found by
their declarations (`projects`)."""
