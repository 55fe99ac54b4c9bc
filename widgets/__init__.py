"""Qt views. They call the domain packages (store, inference, review) and never hold domain logic themselves."""
