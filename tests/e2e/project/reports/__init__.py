"""A reusable package of the project: it declares shared tasks and never imports the app."""
