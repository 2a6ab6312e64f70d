"""The shared answer checker on the forms teachers and students actually write."""

import threading

import pytest

from distill.answers import extract_answer, extract_code, extract_gold, is_correct, normalize_number

# (completion, normalized answer, format, the text its span covers); None: no answer at all.
EXTRACTIONS = [
    # GSM8K "#### N", with the decorations models add
    ("3 + 4 = 7 apples.\n#### 7", "7", "gsm8k", "7"),
    ("####72", "72", "gsm8k", "72"),
    ("So she pays $18.\n#### $18", "18", "gsm8k", "$18"),
    ("#### $1,234.50", "1234.5", "gsm8k", "$1,234.50"),
    ("#### 18 dollars", "18", "gsm8k", "18 dollars"),
    ("#### 72.", "72", "gsm8k", "72"),
    ("#### **72**", "72", "gsm8k", "72"),
    ("#### $18$", "18", "gsm8k", "18"),
    ("#### 1 234", "1234", "gsm8k", "1 234"),
    ("#### −5", "-5", "gsm8k", "−5"),
    ("#### -5", "-5", "gsm8k", "-5"),
    ("#### +7", "7", "gsm8k", "+7"),
    ("#### .5", "0.5", "gsm8k", ".5"),
    ("#### 0.750", "0.75", "gsm8k", "0.750"),
    ("#### 25%", "25", "gsm8k", "25%"),
    ("#### 3/4", "0.75", "gsm8k", "3/4"),
    ("#### 1/3", "1/3", "gsm8k", "1/3"),
    ("#### 20 + 30 = 50", "50", "gsm8k", "50"),
    ("#### $5 - $3 = $2", "2", "gsm8k", "$2"),
    ("#### 1,000,000", "1000000", "gsm8k", "1,000,000"),
    ("#### 5\nI hope this helps!", "5", "gsm8k", "5"),
    # the last "####" that holds an answer; markdown headings are not answers
    ("#### 5\nWait, I made a mistake.\n#### 6", "6", "gsm8k", "6"),
    ("#### Step 1\nShe has 3, then 4 more.\n#### 7\n#### Check\nDone.", "7", "gsm8k", "7"),
    # "####" outranks every other marker
    ("The answer is 6. \\boxed{6}\n#### 7", "7", "gsm8k", "7"),
    # \boxed{...}, nested braces, LaTeX numbers, symbolic answers
    ("The final answer is $\\boxed{\\frac{3}{4}}$.", "0.75", "boxed", "\\frac{3}{4}"),
    ("\\boxed{\\dfrac{1}{3}}", "1/3", "boxed", "\\dfrac{1}{3}"),
    ("\\boxed{x^2+1}", "x^2+1", "boxed", "x^2+1"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", "boxed", "\\frac{\\sqrt{3}}{2}"),
    ("so $\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}", "boxed", "\\{1, 2\\}"),
    ("\\boxed{1{,}234}", "1234", "boxed", "1{,}234"),
    ("\\boxed{18 \\text{ dollars}}", "18", "boxed", "18 \\text{ dollars}"),
    ("\\boxed{\\$18}", "18", "boxed", "\\$18"),
    ("\\boxed{x = 5}", "5", "boxed", "5"),
    ("\\boxed{ 42 }", "42", "boxed", "42"),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", "boxed", "4"),
    ("The answer is 6, i.e. \\boxed{6}", "6", "boxed", "6"),
    ("\\boxed{5} and then \\boxed{}", "5", "boxed", "5"),
    ("\\fbox{12}", "12", "boxed", "12"),
    # "The answer is N", "Answer: N", "final answer is N"
    ("Adding up, the answer is 42.", "42", "answer_is", "42"),
    ("Answer: 72", "72", "answer_is", "72"),
    ("**Answer:** **72**", "72", "answer_is", "72"),
    ("The final answer is: $18.", "18", "answer_is", "$18"),
    ("Final Answer: The final answer is 42. I hope it is correct.", "42", "answer_is", "42"),
    ("The answer is 18 apples.", "18", "answer_is", "18 apples"),
    ("The answer is 18 because 3*6=18", "18", "answer_is", "18"),
    ("The answer is 18, since 3 * 6 = 18.", "18", "answer_is", "18"),
    ("The answer is $x = 5$.", "5", "answer_is", "5"),
    ("The answer is x^2+1.", "x^2+1", "answer_is", "x^2+1"),
    ("The answer is $\\frac{\\pi}{2}$.", "\\frac{\\pi}{2}", "answer_is", "\\frac{\\pi}{2}"),
    ("The answer is: 2\\pi", "2\\pi", "answer_is", "2\\pi"),
    ("The answer is (1, 2].", "(1, 2]", "answer_is", "(1, 2]"),
    ("The answer was 0.5 hours", "0.5", "answer_is", "0.5 hours"),
    ("Answer: 5\nAnswer: 6", "6", "answer_is", "6"),
    # an answer marker followed by words only, or a number with no marker: no answer
    ("The answer is that I am not sure; total 12 apples", None, None, None),
    ("She has 3 apples and buys 4 more, so 7", None, None, None),
    ("no numbers here", None, None, None),
    ("", None, None, None),
]


# The last-number fallback, only when asked for: a guess, marked "fallback".
FALLBACKS = [
    ("The answer is that I am not sure; total 12 apples", "12", "12"),
    ("She has 3 apples and buys 4 more, so 7", "7", "7"),
    ("It costs \\$1{,}234 in total", "1234", "\\$1{,}234"),
    ("He bought 5 120-page books", "120", "120"),
    ("so the total is 10-4", "4", "4"),
    ("The result is -3.5 degrees", "-3.5", "-3.5"),
    ("That is \\frac{1}{3} of the cake", "1/3", "\\frac{1}{3}"),
    ("The bill is $1,000.", "1000", "$1,000"),
    ("So 11 remain (out of the original 15)", "15", "15"),
]


@pytest.mark.parametrize("text, answer, raw", FALLBACKS)
def test_the_last_number_fallback_is_an_opt_in_marked_as_such(text, answer, raw):
    assert extract_answer(text) is None
    found = extract_answer(text, fallback=True)
    assert (found.answer, found.format, found.raw) == (answer, "fallback", raw)
    assert text[slice(*found.span)] == raw and found.start == len(text)


def test_the_fallback_never_outranks_a_stated_answer():
    found = extract_answer("Answer: 72\nThen 3 more steps: 5", fallback=True)
    assert (found.answer, found.format) == ("72", "answer_is")


@pytest.mark.parametrize("text, answer, fmt, raw", EXTRACTIONS)
def test_extract_answer(text, answer, fmt, raw):
    found = extract_answer(text)
    if answer is None:
        assert found is None
        return
    assert (found.answer, found.format, found.raw) == (answer, fmt, raw)
    start, end = found.span
    assert text[start:end] == raw


def test_the_answer_statement_starts_at_its_marker():
    text = "She had 3 and got 4. So the answer is 7."
    assert text[:extract_answer(text).start] == "She had 3 and got 4. "
    text = "Add them: 3 + 4 = 7. The final answer is $\\boxed{7}$."
    assert text[:extract_answer(text).start] == "Add them: 3 + 4 = 7. "
    text = "3 + 4 = 7\n#### 7"
    assert text[:extract_answer(text).start] == "3 + 4 = 7\n"
    assert extract_answer("it is 7", fallback=True).start == len("it is 7")


NUMBERS = [
    ("1,234", "1234"), ("1 234", "1234"), ("1{,}234", "1234"), ("1\\,234", "1234"),
    ("$18.00", "18"), ("€5", "5"), ("£3.50", "3.5"), ("\\$18", "18"), ("-$5", "-5"),
    ("$-5", "-5"), ("+5", "5"), (".5", "0.5"), ("-.5", "-0.5"), ("5.", "5"), ("007", "7"),
    ("3/4", "0.75"), ("6/8", "0.75"), ("4/2", "2"), ("-3/4", "-0.75"), ("1/3", "1/3"),
    ("2/6", "1/3"), ("1/7", "1/7"), ("\\frac{3}{4}", "0.75"), ("\\dfrac{-3}{4}", "-0.75"),
    ("-\\frac{1}{8}", "-0.125"), ("25%", "25"), ("12.5\\%", "12.5"), ("18 dollars", "18"),
    ("5 cm", "5"), ("3 apples", "3"), ("18 \\text{ dollars}", "18"), ("90^\\circ", None),
    ("1000000.0", "1000000"), ("2.50", "2.5"), ("0.1", "0.1"), ("$18$", "18"), ("**7**", "7"),
    ("−2", "-2"), ("0", "0"), ("-0", "0"), ("1e5", "100000"), ("2.5E-3", "0.0025"),
    ("1.5 \\times 10^{3}", "1500"), ("3 1/2", "3.5"), ("3\\frac{1}{2}", "3.5"), ("3½", "3.5"),
    ("twelve", "12"), ("٣", "3"),
    # not a number
    ("3/0", None), ("5x", None), ("5 x", None), ("2^3", None), ("2 pi", None),
    ("2\\sqrt{3}", None), ("1,23", None), ("abc", None), ("", None),
    ("3 + 4", None), ("18-20", None), ("-$-5", None), (None, None), ("12:30", None),
    ("12 or 13", None), ("3 5/2", None), ("1,5", None), ("about 12", None),
    pytest.param("1" * 5000, None, id="5000-digits"),
]


@pytest.mark.parametrize("text, expected", NUMBERS)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


# (prediction, gold, verdict): exact for numbers, math-verify for the rest.
JUDGEMENTS = [
    ("0.75", "3/4", True), ("1,000", "1000.00", True), ("$18", "18", True),
    ("18 dollars", "18", True), ("\\frac{1}{2}", "0.5", True), ("-0.5", "-1/2", True),
    ("72", "72", True), ("1/3", "2/6", True),
    ("72", "7.2", False), ("1/3", "0.33", False), ("0.333333", "1/3", False),
    ("72", "720", False), ("-5", "5", False), ("0.75", "3/5", False), ("25%", "0.25", False),
    ("x^2+1", "1+x^2", True), ("\\sqrt{2}", "2^{1/2}", True), ("\\{2,1\\}", "\\{1,2\\}", True),
    ("[1,2)", "[1,2)", True), ("\\frac{1}{2}\\sqrt{3}", "\\frac{\\sqrt{3}}{2}", True),
    ("2 \\pi", "2\\pi", True), ("\\sqrt{4}", "2", True), ("x = 5", "5", True),
    ("x^2-1", "x^2+1", False), ("(1,2]", "[1,2)", False), ("(2,1)", "(1,2)", False),
    ("\\pi", "3.14159", False), ("B", "A", False),
    # gold is not symmetric with prediction: a relation predicted for an interval
    ("x \\le 3", "(-\\infty, 3]", False),
    # garbage never raises
    ("}{", "{{", False), ("", "5", False), (None, "5", False), ("5", None, False),
    ("\\frac{", "\\frac{1}{2}", False), pytest.param("1" * 5000, "1", False, id="5000-digits"),
]


@pytest.mark.parametrize("pred, gold, verdict", JUDGEMENTS)
def test_is_correct(pred, gold, verdict):
    assert is_correct(pred, gold) is verdict


def test_is_correct_works_off_the_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append(is_correct("x^2+1", "1+x^2")))
    worker.start()
    worker.join()
    assert results == [True]


@pytest.mark.parametrize("gold, expected", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nIn total 48+24 = <<48+24=72>>72.\n#### 72",
     "72"),
    ("#### 1,000", "1000"), ("18", "18"), (18, "18"), ("0.50", "0.5"), ("3/4", "0.75"),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{2}"), ("$x^2+1$", "x^2+1"),
    ("So the area is $\\boxed{\\frac{1}{2}}$.", "0.5"), ("", None), ("  ", None), (None, None),
])
def test_extract_gold(gold, expected):
    assert extract_gold(gold) == expected


def test_extract_code_takes_the_printing_python_block():
    text = ("Plan first.\n```python\nx = 2\n```\nThen:\n```python\nprice = 3\nprint(price * 4)\n```\n"
            "Output:\n```\n12\n```\n")
    code, (start, end) = extract_code(text)
    assert code == "price = 3\nprint(price * 4)" and text[start:end] == code


def test_extract_code_takes_plain_and_unclosed_fences_and_skips_other_languages():
    assert extract_code("```\nprint(1)\n```")[0] == "print(1)"
    assert extract_code("```py\nprint(2)")[0] == "print(2)"
    assert extract_code("```python\na = 1\n```\n```python\nb = 2\n```")[0] == "b = 2"
    assert extract_code("```bash\necho hi\n```") is None
    assert extract_code("print(1)") is None and extract_code(None) is None
