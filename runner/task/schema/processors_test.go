package schema

import "testing"

// word2number's word_to_num, as lm-eval's NumberParseRegexFilter uses it: the values
// its README gives, its sums and products of two to four words, its refusals.
func TestWordsReadAsWord2NumberReadsThem(t *testing.T) {
	for in, want := range map[string]string{
		"two million three thousand nine hundred and eighty four": "2003984",
		"two thousand and nineteen":                               "2019",
		"one hundred twenty three":                                "123",
		"nineteen":                                                "19",
		"seven":                                                   "7",
		"twenty one":                                              "21",
		"five hundred":                                            "500",
		"three thousand":                                          "3000",
		"two billion five":                                        "2000000005",
		// word2number's order: a trailing thousand yields to the million's remainder.
		"two million three thousand": "2004003",
	} {
		if got, ok := wordToNum(in); !ok || got != want {
			t.Errorf("%q: %q, %v; want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"and", "thousand thousand", "one million thousand", "one thousand million"} {
		if got, ok := wordToNum(in); ok {
			t.Errorf("%q: %q; word2number raises", in, got)
		}
	}
}

// NumberParseRegexFilter: digits first; else English words in the lowercased answer.
func TestNumbersInWordsAreParsed(t *testing.T) {
	f, err := numberParseFilter(FilterStep{RegexPattern: "([-0-9]+)"})
	if err != nil {
		t.Fatal(err)
	}
	for resp, want := range map[string]string{
		"I count twenty one things, then 3 more.": "3",
		"one hundred and five":                    "105",
		"There are Twelve apples.":                "12",
		// lm-eval's pattern takes "seven" only between other number words.
		"There are seven apples.": "[invalid]",
		"no number":               "[invalid]",
		"It is -12.":              "-12",
		"Twelve, no, fourteen":    "12",
	} {
		if got := f(resp, nil); got != want {
			t.Errorf("%q: %q; want %q", resp, got, want)
		}
	}
}
