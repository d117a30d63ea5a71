// tests: placeholder
