"""Applications on top of the library: the CLI, the demo, the app, the Space, Hub publishing and cards."""
