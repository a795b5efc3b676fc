"""The classic first example, for Celeriac: one app, a few tasks.

Run a worker for it with:  python -m worker --tasks examples.get_started.tasks
"""

import os

from client import Celeriac

# The broker's address: CELERIAC_BROKER when set (the demo sets it), else the default port.
app = Celeriac("tasks", broker=os.environ.get("CELERIAC_BROKER", "localhost:7475"))


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def divide(x, y):
    return x / y
