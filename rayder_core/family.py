"""The default model family: the family of a model mapping without a `family` key (the registry,
`rayder_core.models`) and of a stored run whose config names none (the store's `runs.family`). A module of its own,
without torch, so that the store need not import the models."""

DEFAULT_FAMILY = "rayder"
