"""chat(model): the chat widget over anything with generate_with_stats (the real LoadedModel is tested elsewhere;
here a small deterministic stand-in implements the one method the widget relies on)."""
from __future__ import annotations

import pytest

from tunecell.widgets.chat_widget import Chat, chat


class EchoModel:
    """Answers with the prompt reversed, truncated to max_new_tokens characters; one token per character."""

    path = "echo-model"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def generate_with_stats(self, prompt: str, max_new_tokens: int = 64) -> tuple[str, int, float]:
        self.calls.append((prompt, max_new_tokens))
        text = prompt[::-1][:max_new_tokens]
        return text, len(text), 0.5


class BrokenModel:
    def generate_with_stats(self, prompt: str, max_new_tokens: int = 64) -> tuple[str, int, float]:
        raise RuntimeError("out of memory")


def test_send_shows_prompt_answer_and_rate() -> None:
    model = EchoModel()
    view = chat(model, max_new_tokens=16)
    assert isinstance(view, Chat) and "no messages yet" in view.history_html.value
    assert view.send("hello there") == "ereht olleh"
    assert model.calls == [("hello there", 16)]
    page = view.history_html.value
    assert "hello there" in page and "ereht olleh" in page
    assert "11 tokens" in page and "22.0 tok/s" in page
    assert [(x.prompt, x.answer, x.n_tokens) for x in view.history] == [("hello there", "ereht olleh", 11)]
    assert not view.send_button.disabled


def test_button_click_sends_the_input_and_clears_it() -> None:
    model = EchoModel()
    view = chat(model)
    view.max_new_tokens.value = 3
    view.input.value = "abcdef"
    view.send_button.click()
    assert view.input.value == ""
    assert model.calls == [("abcdef", 3)]
    assert view.history[-1].answer == "fed" and "fed" in view.history_html.value
    view.input.value = "   "  # blank input: nothing is sent
    view.send_button.click()
    assert len(model.calls) == 1 and len(view.history) == 1
    view.input.value = "xy"
    view.send_button.click()
    page = view.history_html.value
    assert page.index("abcdef") < page.index("xy") and len(view.history) == 2


def test_answers_are_escaped() -> None:
    view = chat(EchoModel())
    view.send("<b>bold</b>")
    assert "<b>bold</b>" not in view.history_html.value and "&lt;b&gt;bold&lt;/b&gt;" in view.history_html.value


def test_generation_errors_show_in_the_history() -> None:
    view = chat(BrokenModel())
    with pytest.raises(RuntimeError):
        view.send("hi")
    assert "RuntimeError: out of memory" in view.history_html.value and not view.send_button.disabled
    view.input.value = "again"
    view.send_button.click()  # a click does not raise: the error is shown
    assert view.history_html.value.count("out of memory") == 2


def test_model_from_a_path_and_from_a_run_result(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import tunecell.inference

    loaded = EchoModel()
    seen = []
    monkeypatch.setattr(tunecell.inference, "load_model", lambda path: seen.append(path) or loaded)
    assert chat(str(tmp_path)).model is loaded and seen == [str(tmp_path)]

    class ResultLike:
        def model(self, which: str = "model"):
            return loaded

    assert chat(ResultLike()).model is loaded
    with pytest.raises(TypeError):
        chat(42)


def test_widget_is_displayable_and_clear() -> None:
    view = chat(EchoModel())
    assert "application/vnd.jupyter.widget-view+json" in view._repr_mimebundle_()
    assert view.history_html in view.widget.children and "echo-model" in view.widget.children[0].value
    view.send("x")
    view.clear()
    assert view.history == [] and "no messages yet" in view.history_html.value


def test_package_exports_stay_functions_after_submodule_imports() -> None:
    import tunecell.widgets as widgets
    import tunecell.widgets.chat_widget  # noqa: F401  (binding the submodule must not shadow chat())
    import tunecell.widgets.progress  # noqa: F401

    assert callable(widgets.chat) and widgets.chat(EchoModel()).send("ab") == "ba"
    assert widgets.RunProgress is tunecell.widgets.progress.RunProgress
    assert widgets.static_summary is tunecell.widgets.progress.static_summary
    assert widgets.Chat is Chat
