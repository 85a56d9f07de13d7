//! A guard against regular expressions that backtrack catastrophically.
//!
//! Schemas are validated here with a linear-time engine, but the same schemas
//! are read by consumers whose validators backtrack (JavaScript, Python,
//! Java). So registration refuses any `pattern` / `patternProperties` regex
//! that has a known exponential shape:
//!
//! - a quantified group whose body itself repeats (`(a+)+`, `(\w*\s?)*`, `(a{2,})+`);
//! - a quantified group with alternatives that can start with the same
//!   character, or that can be empty (`(a|ab)*`, `(\w|\d)+`, `(a|)*`);
//! - back-references (`\1`, `\k<name>`);
//! - more than [`MAX_REGEX_LEN`] characters.
//!
//! The check is conservative: it may refuse a safe regex, never the reverse
//! for these shapes.

/// Longest accepted `pattern` regex, in characters.
pub const MAX_REGEX_LEN: usize = 256;

/// First-character sets, as a bitmap of ASCII plus a flag for anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CharSet {
    ascii: u128,
    other: bool,
}

impl CharSet {
    const ALL: CharSet = CharSet { ascii: u128::MAX, other: true };

    fn single(c: char) -> CharSet {
        if c.is_ascii() {
            CharSet { ascii: 1u128 << (c as u32), other: false }
        } else {
            CharSet { ascii: 0, other: true }
        }
    }

    fn range(lo: char, hi: char) -> CharSet {
        let mut set = CharSet::default();
        if (hi as u32) > 127 {
            set.other = true;
        }
        let (lo, hi) = (lo as u32, (hi as u32).min(127));
        for c in lo..=hi {
            set.ascii |= 1u128 << c;
        }
        set
    }

    fn union(self, o: CharSet) -> CharSet {
        CharSet { ascii: self.ascii | o.ascii, other: self.other || o.other }
    }

    fn complement(self) -> CharSet {
        // Non-ASCII stays possible in a negated class unless it was all of it.
        CharSet { ascii: !self.ascii, other: true }
    }

    fn intersects(self, o: CharSet) -> bool {
        self.ascii & o.ascii != 0 || (self.other && o.other)
    }

    fn class_escape(c: char) -> Option<CharSet> {
        let digits = CharSet::range('0', '9');
        let word = digits.union(CharSet::range('a', 'z')).union(CharSet::range('A', 'Z')).union(CharSet::single('_'));
        let space = [' ', '\t', '\n', '\r', '\x0b', '\x0c']
            .into_iter()
            .fold(CharSet::default(), |s, c| s.union(CharSet::single(c)));
        match c {
            'd' => Some(digits),
            'w' => Some(CharSet { other: true, ..word }),
            's' => Some(CharSet { other: true, ..space }),
            'D' => Some(digits.complement()),
            'W' => Some(word.complement()),
            'S' => Some(space.complement()),
            'p' | 'P' => Some(CharSet::ALL),
            _ => None,
        }
    }
}

/// What is known about a parsed piece of regex.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Characters the piece can start with.
    first: CharSet,
    /// Whether it can match the empty string.
    nullable: bool,
    /// Whether it contains a repetition (`*`, `+`, `{n,m}` with m > 1).
    repeats: bool,
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    _src: &'a str,
}

type Fault = String;

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    /// alternation := sequence ('|' sequence)*
    fn alternation(&mut self) -> Result<(Shape, Vec<Shape>), Fault> {
        let mut branches = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.sequence()?);
        }
        let shape =
            branches.iter().fold(Shape { first: CharSet::default(), nullable: false, repeats: false }, |acc, b| {
                Shape {
                    first: acc.first.union(b.first),
                    nullable: acc.nullable || b.nullable,
                    repeats: acc.repeats || b.repeats,
                }
            });
        Ok((shape, branches))
    }

    fn sequence(&mut self) -> Result<Shape, Fault> {
        let mut shape = Shape { first: CharSet::default(), nullable: true, repeats: false };
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.quantified()?;
            if shape.nullable {
                shape.first = shape.first.union(atom.first);
            }
            shape.nullable &= atom.nullable;
            shape.repeats |= atom.repeats;
        }
        Ok(shape)
    }

    /// An atom and its optional quantifier.
    fn quantified(&mut self) -> Result<Shape, Fault> {
        let start = self.pos;
        let (atom, branches) = self.atom()?;
        let Some((min, max)) = self.quantifier()? else { return Ok(atom) };
        let repeating = max.is_none_or(|m| m > 1);
        if repeating {
            if atom.repeats {
                return Err(format!("nested quantifier at character {start}: a repeated group contains a repetition"));
            }
            if atom.nullable {
                return Err(format!("quantifier at character {start} repeats something that can match empty"));
            }
            for (i, a) in branches.iter().enumerate() {
                if a.nullable {
                    return Err(format!("alternation at character {start} has an empty branch under a quantifier"));
                }
                for b in &branches[i + 1..] {
                    if a.first.intersects(b.first) {
                        return Err(format!(
                            "alternation at character {start} has overlapping branches under a quantifier"
                        ));
                    }
                }
            }
        }
        Ok(Shape { first: atom.first, nullable: atom.nullable || min == 0, repeats: atom.repeats || repeating })
    }

    /// `*`, `+`, `?`, `{n}`, `{n,}`, `{n,m}` (and a lazy/possessive suffix).
    fn quantifier(&mut self) -> Result<Option<(u32, Option<u32>)>, Fault> {
        let q = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                let save = self.pos;
                self.pos += 1;
                let mut text = String::new();
                while let Some(c) = self.next() {
                    if c == '}' {
                        break;
                    }
                    text.push(c);
                }
                let parsed = match text.split_once(',') {
                    None => text.parse::<u32>().ok().map(|n| (n, Some(n))),
                    Some((lo, "")) => lo.parse::<u32>().ok().map(|n| (n, None)),
                    Some((lo, hi)) => lo.parse::<u32>().ok().zip(hi.parse::<u32>().ok()).map(|(l, h)| (l, Some(h))),
                };
                match parsed {
                    Some(q) => {
                        self.pos -= 1; // leave the closing brace to the common step below
                        q
                    }
                    None => {
                        // A literal `{` (as ECMA-262 allows outside unicode mode).
                        self.pos = save;
                        return Ok(None);
                    }
                }
            }
            _ => return Ok(None),
        };
        self.pos += 1;
        if matches!(self.peek(), Some('?') | Some('+')) {
            self.pos += 1;
        }
        Ok(Some(q))
    }

    fn atom(&mut self) -> Result<(Shape, Vec<Shape>), Fault> {
        let lit = |set: CharSet| Ok((Shape { first: set, nullable: false, repeats: false }, Vec::new()));
        let empty = || Ok((Shape { first: CharSet::default(), nullable: true, repeats: false }, Vec::new()));
        match self.next() {
            None => Err("unexpected end of regex".into()),
            Some('(') => {
                if self.peek() == Some('?') {
                    self.pos += 1;
                    match self.next() {
                        Some(':') => {}
                        Some('=') | Some('!') => return Err("lookaround assertions are not supported".into()),
                        Some('<') if matches!(self.peek(), Some('=') | Some('!')) => {
                            return Err("lookbehind assertions are not supported".into());
                        }
                        Some('<') | Some('P') => {
                            // Named group: skip the name.
                            while let Some(c) = self.next() {
                                if c == '>' {
                                    break;
                                }
                            }
                        }
                        _ => return Err("unsupported group syntax".into()),
                    }
                }
                let (shape, branches) = self.alternation()?;
                if self.next() != Some(')') {
                    return Err("unbalanced parenthesis".into());
                }
                Ok((shape, branches))
            }
            Some(')') => Err("unbalanced parenthesis".into()),
            Some('^') | Some('$') => empty(),
            Some('.') => lit(CharSet::ALL),
            Some('[') => lit(self.class()?),
            Some('\\') => match self.next() {
                None => Err("trailing backslash".into()),
                Some(c @ '1'..='9') => Err(format!("back-reference \\{c} is not allowed")),
                Some('k') => Err("named back-references are not allowed".into()),
                Some('b') | Some('B') | Some('A') | Some('z') | Some('Z') => empty(),
                Some(c) => {
                    if let Some(set) = CharSet::class_escape(c) {
                        if matches!(c, 'p' | 'P') {
                            self.skip_property();
                        }
                        lit(set)
                    } else {
                        lit(self.escaped_char(c))
                    }
                }
            },
            Some(c) => lit(CharSet::single(c)),
        }
    }

    fn skip_property(&mut self) {
        if self.peek() == Some('{') {
            while let Some(c) = self.next() {
                if c == '}' {
                    break;
                }
            }
        } else {
            self.pos += 1;
        }
    }

    /// The set of one escaped character (`\n`, `\x41`, `\u0041`, `\.`).
    fn escaped_char(&mut self, c: char) -> CharSet {
        match c {
            'n' => CharSet::single('\n'),
            't' => CharSet::single('\t'),
            'r' => CharSet::single('\r'),
            'f' => CharSet::single('\x0c'),
            'v' => CharSet::single('\x0b'),
            '0' => CharSet::single('\0'),
            'x' | 'u' => {
                let len = if c == 'x' { 2 } else { 4 };
                let hex: String = self.chars.iter().skip(self.pos).take(len).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) if hex.len() == len => {
                        self.pos += len;
                        CharSet::single(ch)
                    }
                    _ => CharSet::ALL,
                }
            }
            'c' => {
                self.pos += 1;
                CharSet::ALL
            }
            other => CharSet::single(other),
        }
    }

    /// A bracket class, after its `[`.
    fn class(&mut self) -> Result<CharSet, Fault> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut set = CharSet::default();
        let mut first = true;
        loop {
            let c = self.next().ok_or("unterminated character class")?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let item = if c == '\\' {
                let e = self.next().ok_or("trailing backslash in class")?;
                match CharSet::class_escape(e) {
                    Some(s) => {
                        if matches!(e, 'p' | 'P') {
                            self.skip_property();
                        }
                        s
                    }
                    None => self.escaped_char(e),
                }
            } else if c == '[' && self.peek() == Some(':') {
                // POSIX class such as [:alpha:]: treat as anything.
                while let Some(c) = self.next() {
                    if c == ']' {
                        break;
                    }
                }
                CharSet::ALL
            } else {
                CharSet::single(c)
            };
            // A range `a-z` (a `-` before `]` is literal).
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') && c != '\\' {
                self.pos += 1;
                let hi = self.next().ok_or("unterminated range")?;
                if hi == '\\' {
                    set = CharSet::ALL;
                    self.pos += 1;
                    continue;
                }
                if hi < c {
                    return Err(format!("invalid range {c}-{hi}"));
                }
                set = set.union(CharSet::range(c, hi));
            } else {
                set = set.union(item);
            }
        }
        Ok(if negated { set.complement() } else { set })
    }
}

/// Refuses a regex that may backtrack catastrophically; `Ok` means it is safe to register.
pub fn check_regex(src: &str) -> Result<(), String> {
    if src.chars().count() > MAX_REGEX_LEN {
        return Err(format!("regex is longer than {MAX_REGEX_LEN} characters"));
    }
    let mut p = Parser { chars: src.chars().collect(), pos: 0, _src: src };
    p.alternation()?;
    if p.pos < p.chars.len() {
        return Err("unbalanced parenthesis".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_patterns() {
        for ok in [
            "^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$",
            "^ord_[0-9A-Z]{26}$",
            "^\\d{4}-\\d{2}-\\d{2}$",
            "^(GET|POST|PUT|DELETE)$",
            "^(a|b)+$",
            "^[A-Z]{3}$",
            "^\\+?[1-9]\\d{1,14}$",
            "^(\\d+\\.)?\\d+$",
            "^x{2}$",
            "a{,",
            "^[^@]+@[^@]+$",
            "^(?<year>\\d{4})$",
            "^\\p{L}+$",
            "",
        ] {
            assert_eq!(check_regex(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_nested_quantifiers() {
        for bad in [
            "(a+)+",
            "^(a*)*$",
            "(\\w+\\s?)*$",
            "((ab)*)+",
            "(a{2,})+",
            "(?:x+y?)+",
            "([a-z]+)*@",
            "^(?:[a-z]+-)*[a-z]+$",
        ] {
            let e = check_regex(bad).unwrap_err();
            assert!(e.contains("nested") || e.contains("empty"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_overlapping_alternation_under_quantifier() {
        for bad in ["(a|ab)*", "^(\\w|\\d)+$", "(a|a)+", "(x|[a-z])*", "(.|b)+", "(a|)*", "(\\s|[^a])+"] {
            let e = check_regex(bad).unwrap_err();
            assert!(e.contains("overlapping") || e.contains("empty"), "{bad}: {e}");
        }
        // Disjoint alternatives are fine, quantified or not.
        assert_eq!(check_regex("^(a|b|c)+$"), Ok(()));
        assert_eq!(check_regex("^(\\d|x)+$"), Ok(()));
        assert_eq!(check_regex("^(a|ab)$"), Ok(()));
    }

    #[test]
    fn refuses_backreferences_lookaround_and_long_patterns() {
        assert!(check_regex("(a)\\1").unwrap_err().contains("back-reference"));
        assert!(check_regex("(?<x>a)\\k<x>").unwrap_err().contains("back-reference"));
        assert!(check_regex("a(?=b)").unwrap_err().contains("lookaround"));
        assert!(check_regex(&"a".repeat(MAX_REGEX_LEN + 1)).unwrap_err().contains("longer"));
        assert_eq!(check_regex(&"a".repeat(MAX_REGEX_LEN)), Ok(()));
        assert!(check_regex("(a").is_err());
        assert!(check_regex("a)").is_err());
    }

    #[test]
    fn optional_is_not_a_repetition() {
        assert_eq!(check_regex("^(a?)?$"), Ok(()));
        assert_eq!(check_regex("^(ab?){3}$"), Ok(()));
        assert!(check_regex("^(a?){2}$").is_err(), "repeating something nullable");
    }
}
