"""The producer of the first example: submit tasks, then read ids, states and results."""

from client import group
from examples.get_started.tasks import add, divide, mul


def main() -> None:
    result = add.delay(4, 4)
    print(f"add.delay(4, 4) -> task_id={result.task_id}")
    print(f"  ready() right after delay(): {result.ready()}")
    print(f"  get(timeout=10): {result.get(timeout=10)}")
    print(f"  state={result.state} ready()={result.ready()} result={result.result}")

    product = mul.apply_async((6, 7), countdown=0.2)
    print(f"mul.apply_async((6, 7), countdown=0.2) -> task_id={product.task_id}")
    print(f"  get(timeout=10): {product.get(timeout=10)}  state={product.state}")

    failing = divide.delay(1, 0)
    print(f"divide.delay(1, 0) -> task_id={failing.task_id}")
    try:
        failing.get(timeout=10)
    except ZeroDivisionError as exc:
        print(f"  get() re-raised the task's error: {type(exc).__name__}: {exc}")
    print(f"  state={failing.state} failed()={failing.failed()}")

    batch = group(add.s(i, i) for i in range(10)).apply_async()
    print(f"group of 10 add tasks -> {batch.get(timeout=10)}")


if __name__ == "__main__":
    main()
