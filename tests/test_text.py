"""Tokenisation: word regex, jieba for Chinese, case, stopwords."""

from __future__ import annotations

import pytest

from kxtool.errors import KxError
from kxtool.text import Tokenizer, default_stopwords, has_cjk, tokenize


def test_english_defaults():
    tok = Tokenizer()
    assert tok("The cat sat on the mat.") == ["cat", "sat", "mat"]
    assert tok("Obama speaks to the media in Illinois") == ["obama", "speaks", "media", "illinois"]


def test_words_numbers_apostrophes():
    tok = Tokenizer(stopwords="none")
    assert tok("Stop, it is 3.5 or 1,000 foo_bar e-mail o'clock") == [
        "stop", "it", "is", "3.5", "or", "1,000", "foo", "bar", "e", "mail", "o'clock",
    ]
    assert tok("") == []
    assert tok("  ... !!! ") == []


def test_clitics_split_as_in_glove():
    tok = Tokenizer(stopwords="none")
    assert tok("Don\u2019t! It's, we'll, they're, I'm, can't") == [
        "do", "n't", "it", "'s", "we", "'ll", "they", "'re", "i", "'m", "ca", "n't",
    ]
    assert Tokenizer()("I don't like it") == ["n't", "like"]  # the negation stays


def test_negations_are_kept():
    assert Tokenizer()("not good") == ["not", "good"]
    assert any("不" in t for t in Tokenizer()("这个不好"))


def test_keep_case_still_drops_stopwords():
    assert Tokenizer(lowercase=False)("The Cat and THE Dog") == ["Cat", "Dog"]


def test_stopwords_none_set_and_file(tmp_path):
    assert Tokenizer(stopwords="none")("the cat") == ["the", "cat"]
    assert Tokenizer(stopwords={"Cat"})("the cat") == ["the"]
    f = tmp_path / "stop.txt"
    f.write_text("# my list\ncat\n\nDOG\n", encoding="utf-8")
    assert Tokenizer(stopwords=str(f))("the cat and the dog run") == [
        "the",
        "and",
        "the",
        "run",
    ]
    assert Tokenizer(stopwords=f)("dog") == []


def test_stopwords_missing_file():
    with pytest.raises(KxError, match="not found"):
        Tokenizer(stopwords="/nonexistent/stop.txt")


def test_bad_lang():
    with pytest.raises(KxError, match="unknown language"):
        Tokenizer(lang="fr")


def test_default_lists_are_both_languages():
    sw = default_stopwords()
    assert {"the", "and", "的", "了"} <= sw
    assert not ({"not", "no", "不", "没有"} & sw)


def test_has_cjk():
    assert has_cjk("今天")
    assert has_cjk("abc 天 def")
    assert not has_cjk("abc, déjà vu! привет")
    assert not has_cjk("")


def test_chinese_auto_uses_jieba():
    tok = Tokenizer()
    out = tok("我们在北京大学学习 NLP 和 Word2Vec！")
    assert "北京大学" in out
    assert "学习" in out
    assert "nlp" in out and "word2vec" in out
    assert "我们" not in out and "在" not in out and "和" not in out
    assert all(t.strip() and t not in "！，。 " for t in out)


def test_lang_forced():
    # en on Chinese text: the regex sees one run of ideographs
    assert Tokenizer(lang="en")("今天天气") == ["今天天气"]
    assert Tokenizer(lang="zh", stopwords="none")("hello world") == ["hello", "world"]


def test_tokenize_convenience():
    assert tokenize("The Cat", lowercase=False) == ["Cat"]
    assert tokenize("The Cat") == ["cat"]
    assert tokenize("the cat", stopwords=["cat"]) == ["the"]


def test_split_tells_stopwords_from_no_words():
    tok = Tokenizer()
    assert tok.split("The cat and the hat") == (["cat", "hat"], ["the", "and", "the"])
    assert tok.split("The of AND") == ([], ["the", "of", "and"])
    assert tok.split(" ... !!! ") == ([], [])
    assert Tokenizer(lowercase=False).split("The Cat") == (["Cat"], ["The"])
    assert Tokenizer(stopwords="none").split("the cat") == (["the", "cat"], [])
    for text in ("The cat and the hat", "I don't like it", "这个不好"):
        assert tok.split(text)[0] == tok(text)


def _wmd_cli(*args, input=None):
    from typer.testing import CliRunner

    from kxtool.cli import app

    return CliRunner().invoke(app, ["wmd", *args], input=input)


def test_wmd_says_a_text_has_only_stopwords(tmp_path, monkeypatch):
    monkeypatch.delenv("KXTOOL_VECTORS", raising=False)
    r = _wmd_cli("-t", "the of and", "cat dog")
    assert r.exit_code == 0, r.output
    assert r.stdout == "nan\n"
    assert r.stderr == (
        "kxtool: warning: 1 of 2 texts has only stopwords: the score is nan\n"
    )
    r = _wmd_cli("-t", "... !!!", "cat dog")
    assert "1 of 2 texts has no words: the score is nan" in r.stderr
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("cat dog\nthe of and\nqwzxqwzx\nmouse\n")
    b.write_text("dog\ncat\ncat\n!!!\n")
    for extra in ([], ["--jobs", "2"], ["--cross"], ["--top", "1"]):
        r = _wmd_cli(str(a), str(b), *extra)
        assert r.exit_code == 0, r.output
        assert "only stopwords" in r.stderr, (extra, r.stderr)
        assert (
            "of 8 texts, 1 has only stopwords, 1 has no words, 1 has no word found in the"
            " vectors: " in r.stderr
        ), (extra, r.stderr)
