"""A kernel as far as widgets/form.py asks one: which message it is handling now. In Jupyter a button click is a
comm message, and a set_next_input payload rides on the reply of whichever cell runs next."""
from __future__ import annotations


class FakeKernel:
    def __init__(self) -> None:
        self.header = {"msg_type": "execute_request", "msg_id": "run-1"}  # the cell that shows the widget

    def get_parent(self, channel: str = "shell") -> dict:
        return {"header": dict(self.header)}


def in_a_kernel(ip, monkeypatch) -> tuple[FakeKernel, list[tuple[str, bool]]]:
    """The shell given a FakeKernel; the list collects what set_next_input is given: (text, replace)."""
    written: list[tuple[str, bool]] = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: written.append((text, replace)))
    kernel = FakeKernel()
    monkeypatch.setattr(ip, "kernel", kernel, raising=False)
    return kernel, written
