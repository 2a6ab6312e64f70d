"""The answer checker on tricky answers: each row is a completion's answer statement, a gold
answer and the verdict a user must get. A false positive (a wrong or ambiguous answer judged
correct) would put a wrong solution into training data and inflate eval, so the bar is zero;
a miss (AMBIGUOUS, or no answer) is acceptable where the answer is genuinely unclear."""

import pytest

from distill.answers import AMBIGUOUS, CORRECT, WRONG, extract_answer, extract_gold, judge

C, W, A, NONE = CORRECT, WRONG, AMBIGUOUS, "no answer"

TABLE = [
    # plain answers keep working
    ("#### 72", "72", C), ("#### 72.00", "72", C), ("The answer is 72.", "72", C),
    ("#### 7.2", "72", W), ("Answer: 0.5", "1/2", C), ("#### -5", "5", W), ("#### 5", "-5", W),
    ("#### 720", "72", W), ("#### 0", "0", C),
    # units
    ("#### 18 dollars", "18", C), ("The answer is 18 apples.", "18", C), ("#### 5 cm", "5", C),
    ("The answer was 0.5 hours", "0.5", C), ("#### 12 km/h", "12", C),
    ("\\boxed{18 \\text{ dollars}}", "18", C), ("#### 12 more apples", "12", C),
    ("#### 5 hours 30 minutes", "5", A), ("#### 5 hours 30 minutes", "30", A),
    ("#### 18 dollars and 50 cents", "18", A), ("#### 12 and a half", "12", A),
    # currencies
    ("#### $18", "18", C), ("#### $1,234.50", "1234.5", C), ("#### €5", "5", C),
    ("#### £3.50", "3.5", C), ("\\boxed{\\$18}", "18", C), ("#### -$5", "-5", C),
    ("#### $5 - $3 = $2", "2", C), ("#### $5 - $3 = $2", "5", W), ("#### USD 18", "18", C),
    ("#### ¥500", "500", C), ("#### $12 or $13", "12", A), ("\\boxed{\\$1{,}000}", "1000", C),
    # percentages
    ("#### 25%", "25", C), ("#### 25%", "0.25", W), ("\\boxed{12.5\\%}", "12.5", C),
    ("#### 25 percent", "25", C), ("#### 0.25", "25", W),
    # fractions
    ("#### 3/4", "0.75", C), ("#### 6/8", "3/4", C), ("#### 1/3", "0.33", W),
    ("#### 0.333", "1/3", W), ("\\boxed{\\frac{3}{4}}", "0.75", C),
    ("\\boxed{\\dfrac{1}{3}}", "1/3", C), ("\\boxed{\\tfrac{1}{2}}", "0.5", C),
    ("\\boxed{-\\frac{1}{8}}", "-0.125", C), ("\\boxed{\\frac{24}{2}}", "12", C),
    ("#### 3/0", "3", W),
    # mixed numbers are what they are, not their whole part
    ("#### 3 1/2", "3.5", C), ("#### 3 1/2", "3", W), ("#### 3 1/2", "7/2", C),
    ("\\boxed{3\\frac{1}{2}}", "3.5", C), ("\\boxed{3\\frac{1}{2}}", "3", W),
    ("#### 3½", "3.5", C), ("#### -3 1/2", "-3.5", C), ("#### 2 3/4 cups", "2.75", C),
    ("#### 3 5/2", "3", A),
    # scientific notation
    ("#### 1e3", "1000", C), ("#### 1e3", "1", W), ("The answer is 1.5e-3.", "0.0015", C),
    ("\\boxed{1.5 \\times 10^{3}}", "1500", C), ("#### 1.5 × 10^3", "1500", C),
    ("#### 1.5 × 10^3", "1.5", W), ("#### 2.5·10³", "2500", C), ("#### 1E+3", "1000", C),
    ("#### 6.02 x 10^23", "6.02e23", C), ("#### 1e3", "10^3", C),
    # times are times: never equal to a number
    ("#### 12:30", "12", W), ("#### 12:30", "12.5", W), ("#### 12:30", "12:30", C),
    ("The answer is 1:30 pm.", "13:30", C), ("The answer is 1:30 p.m.", "1:30 PM", C),
    ("#### 1:30", "1:30 pm", W), ("#### 9:05", "9:05", C), ("#### 5 pm", "5", W),
    ("#### 12:30 am", "0:30", C), ("#### 2:1", "2", A), ("#### 2:1", "1", A),
    # numbers in words
    ("The answer is twelve.", "12", C), ("#### twenty-five", "25", C),
    ("#### two hundred", "200", C), ("The answer is twelve or thirteen.", "12", A),
    ("The answer is eleven.", "12", W), ("#### 12", "twelve", C),
    # negative numbers and the unicode minus
    ("#### −5", "-5", C), ("#### −5", "5", W), ("\\boxed{-0}", "0", C), ("#### +7", "7", C),
    # unicode digits
    ("#### ٣", "3", C), ("#### ١٢", "12", C), ("#### ١٢", "21", W), ("#### ३", "3", C),
    ("#### １２", "12", C), ("#### ٣٫٥", "3.5", C),
    # thousands separators: 1,000 is a thousand; 1,5 could be 1.5 or 15
    ("#### 1,000", "1000", C), ("#### 1,5", "1.5", A), ("#### 1,5", "15", A),
    ("#### 1,000,000", "1000000", C), ("#### 1 234", "1234", C), ("\\boxed{1{,}234}", "1234", C),
    ("#### 12,13", "12", A), ("#### 1,2345", "12345", A), ("#### 1.000", "1000", W),
    ("#### 12.5.3", "12.5", A),
    # trailing periods
    ("#### 72.", "72", C), ("The answer is 72. I hope it is correct.", "72", C),
    ("The answer is 5.", "5.0", C),
    # ranges and alternatives
    ("#### 12 or 13", "12", A), ("#### 12 or 13", "13", A), ("#### 12-13", "12", A),
    ("#### 12–13", "13", A), ("The answer is between 12 and 13.", "12", A),
    ("#### 12 to 13", "12", A), ("The answer is 12, or maybe 13.", "12", A),
    ("\\boxed{12 \\text{ or } 13}", "12", A), ("\\boxed{\\pm 3}", "3", A),
    ("The answer is x = 2 or x = 3.", "2", A), ("#### a = 12, b = 13", "13", A),
    ("#### 5\nWait, that is wrong.\n#### between 5 and 6", "5", A),
    # approximations and bounds
    ("The answer is about 12.", "12", A), ("\\boxed{\\approx 12}", "12", A),
    ("#### ~12", "12", A), ("#### at least 12", "12", A), ("#### 12 or more", "12", A),
    ("\\boxed{x \\ge 12}", "12", A), ("#### 0.333...", "1/3", W),
    ("\\boxed{0.\\overline{3}}", "1/3", W), ("\\boxed{0.333\\ldots}", "1/3", A),
    # several numbers
    ("#### 12 apples and 3 pears", "12", A),
    ("The answer is 11 (out of the original 15).", "15", A),
    ("\\boxed{12_3}", "12", A), ("\\boxed{5!}", "5", A), ("\\boxed{5!}", "120", A),
    ("#### 20 + 30 = 50", "50", C), ("#### 20 + 30 = 50", "20", W), ("#### 10 - 4 = 6", "6", C),
    ("The answer is 18 because 3 * 6 = 18.", "18", C),
    ("The answer is 18, since 3 * 6 = 18.", "18", C),
    ("#### 12; 13", "12", A), ("#### 12|13", "12", A), ("#### 12+", "12", A),
    ("#### 12ish", "12", A), ("\\boxed{12\\frac{13}{13}}", "13", A), ("Answer: $5!$", "5", A),
    ("The answer is 12, not 13.", "12", C), ("#### not 12", "12", A),
    ("The answer is 18, and she has 2 left.", "18", C), ("The answer is 12, and 13.", "12", A),
    # words that scale or change a number
    ("#### negative 12", "-12", C), ("#### negative five", "5", W), ("#### 12 thousand", "12", W),
    ("#### 1.5 million", "1500000", C), ("#### 2 dozen", "24", C), ("#### 2 dozen", "2", W),
    ("#### 12 squared", "12", A), ("#### 12 below zero", "12", A),
    # LaTeX and symbolic answers
    ("The final answer is $\\boxed{72}$.", "72", C), ("$\\boxed{\\sqrt{4}}$", "2", C),
    ("\\boxed{\\frac{1}{2}\\sqrt{3}}", "\\frac{\\sqrt{3}}{2}", C), ("\\boxed{2\\sqrt{3}}", "2", W),
    ("\\boxed{x = 5}", "5", C), ("The answer is $\\frac{\\pi}{2}$.", "\\frac{\\pi}{2}", C),
    ("\\boxed{(1, 2]}", "(1,2]", C), ("\\boxed{\\{1, 2\\}}", "\\{2, 1\\}", C),
    ("\\boxed{x^2+1}", "1+x^2", C), ("\\boxed{x^2-1}", "x^2+1", W),
    ("\\boxed{\\frac34}", "0.75", C), ("\\boxed{116 - 75i}", "116-75i", C),
    ("\\boxed{\\frac{270}{7}}", "\\frac{270}7\\text{ degrees}", C),
    ("\\boxed{3, 5, 7}", "7, 3, 5", C), ("\\boxed{3, 5}", "3, 5, 7", W),
    ("\\boxed{2516_8}", "2516_8", C),
    # no stated answer: the last number in the text is not taken
    ("So 11 remain (out of the original 15)", "15", NONE),
    ("She has 3 apples and buys 4 more, so 7", "7", NONE), ("I am not sure.", "5", NONE),
]


def verdict(completion: str, gold: str) -> str:
    found = extract_answer(completion)
    return NONE if found is None else judge(found.answer, extract_gold(gold))


@pytest.mark.parametrize("completion, gold, expected", TABLE)
def test_the_checker_judges_each_tricky_answer(completion, gold, expected):
    assert verdict(completion, gold) == expected


def test_the_table_is_large_and_has_no_false_positive():
    assert len(TABLE) >= 100
    false_positives = [(c, g) for c, g, expected in TABLE
                       if expected != C and verdict(c, g) == C]
    assert false_positives == []


@pytest.mark.parametrize("pred, gold", [
    ("12 or 13", "12 or 13"), ("x \\ge 3", "x \\ge 3"), ("13, 12", "12, 13")])
def test_two_answers_that_state_several_values_compare_symbolically(pred, gold):
    assert judge(pred, gold) == C
