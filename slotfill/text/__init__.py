"""Text to model inputs: the tokenizer (raw text to tokens with offsets), vocabularies, word and character
features, and sub-word pieces for a transformer front-end."""
