//! A `numeric` value's text, as `numeric_out` prints it, read straight from its stored form
//! (PostgreSQL 15's utils/adt/numeric.c): the price trigger formats one per changed row, and
//! calling `numeric_out` through pgrx (a guarded call, a palloc'd copy, a UTF-8 check) cost
//! about a tenth of the trigger's own time.

/// Base-10000 digits, stored as i16 after a one- or two-word header.
const DEC_DIGITS: usize = 4;
const SIGN_MASK: u16 = 0xC000;
const NEG: u16 = 0x4000;
const SHORT: u16 = 0x8000;
const SPECIAL: u16 = 0xC000;
const EXT_SIGN_MASK: u16 = 0xF000;
const NAN: u16 = 0xC000;
const PINF: u16 = 0xD000;
const NINF: u16 = 0xF000;
const SHORT_SIGN_MASK: u16 = 0x2000;
const SHORT_DSCALE_MASK: u16 = 0x1F80;
const SHORT_DSCALE_SHIFT: u16 = 7;
const SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const SHORT_WEIGHT_MASK: u16 = 0x003F;
const DSCALE_MASK: u16 = 0x3FFF;

/// The text of a numeric whose stored bytes after the varlena header are `payload`; None when
/// they are not a numeric's (too short, a digit out of range).
pub fn numeric_text(payload: &[u8]) -> Option<String> {
    let word = |at: usize| payload.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let header = word(0)?;
    let (negative, dscale, weight, digits_at) = match header & SIGN_MASK {
        SPECIAL => {
            return match header & EXT_SIGN_MASK {
                NAN => Some("NaN".into()),
                PINF => Some("Infinity".into()),
                NINF => Some("-Infinity".into()),
                _ => None,
            }
        }
        SHORT => {
            let weight = (header & SHORT_WEIGHT_MASK) as i32
                - if header & SHORT_WEIGHT_SIGN_MASK != 0 {
                    (SHORT_WEIGHT_MASK + 1) as i32
                } else {
                    0
                };
            let dscale = ((header & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT) as usize;
            (header & SHORT_SIGN_MASK != 0, dscale, weight, 2)
        }
        sign => (sign == NEG, (header & DSCALE_MASK) as usize, word(2)? as i16 as i32, 4),
    };
    let body = &payload[digits_at..];
    if !body.len().is_multiple_of(2) {
        return None;
    }
    let digits = body.chunks_exact(2).map(|b| i16::from_ne_bytes([b[0], b[1]]));
    if digits.clone().any(|d| !(0..10_000).contains(&d)) {
        return None;
    }
    // digit i holds the base-10000 place `weight - i`
    let digit = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| body.get(2 * i..2 * i + 2))
            .map_or(0, |b| i16::from_ne_bytes([b[0], b[1]]) as u16)
    };
    let mut out = String::with_capacity(body.len() * DEC_DIGITS / 2 + dscale + 3);
    if negative {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        let first = digit(0);
        let width = [1000, 100, 10].iter().filter(|p| first >= **p).count() + 1;
        push_digits(&mut out, first, width);
        for i in 1..=weight {
            push_digits(&mut out, digit(i), DEC_DIGITS);
        }
    }
    if dscale > 0 {
        out.push('.');
        let start = out.len();
        let mut i = weight + 1;
        while out.len() - start < dscale {
            push_digits(&mut out, digit(i), DEC_DIGITS);
            i += 1;
        }
        out.truncate(start + dscale);
    }
    Some(out)
}

/// The last `width` decimal digits of `d` (below 10,000), zero-padded: `core::fmt` per base-10000
/// digit was most of the formatting's time.
fn push_digits(out: &mut String, d: u16, width: usize) {
    for place in [1000, 100, 10, 1][DEC_DIGITS - width..].iter() {
        out.push(char::from(b'0' + (d / place % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::numeric_text;

    fn long(sign_dscale: u16, weight: i16, digits: &[i16]) -> Vec<u8> {
        let mut b = sign_dscale.to_ne_bytes().to_vec();
        b.extend(weight.to_ne_bytes());
        digits.iter().for_each(|d| b.extend(d.to_ne_bytes()));
        b
    }

    fn short(negative: bool, dscale: u16, weight: i8, digits: &[i16]) -> Vec<u8> {
        let w = (weight as i16 as u16) & 0x7F;
        let header = 0x8000 | if negative { 0x2000 } else { 0 } | (dscale << 7) | w;
        let mut b = header.to_ne_bytes().to_vec();
        digits.iter().for_each(|d| b.extend(d.to_ne_bytes()));
        b
    }

    #[test]
    fn stored_numerics_print_as_numeric_out_does() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (short(false, 0, 0, &[]), "0"),
            (short(false, 2, 0, &[]), "0.00"),
            (short(false, 2, 0, &[100, 3700]), "100.37"),
            (short(true, 1, -1, &[5000]), "-0.5"),
            (short(false, 0, 1, &[12, 3456]), "123456"),
            (short(false, 0, 2, &[1]), "100000000"),
            (short(false, 6, -2, &[1200]), "0.000012"),
            (short(false, 8, -2, &[12]), "0.00000012"),
            (short(false, 4, 0, &[7, 1]), "7.0001"),
            (long(20, -5, &[1]), "0.00000000000000000001"),
            (long(0x4000 | 3, 1, &[9, 9999, 9990]), "-99999.999"),
            (long(0xC000, 0, &[]), "NaN"),
            (long(0xD000, 0, &[]), "Infinity"),
            (long(0xF000, 0, &[]), "-Infinity"),
        ];
        for (payload, want) in cases {
            assert_eq!(numeric_text(&payload).as_deref(), Some(want));
        }
        assert_eq!(numeric_text(&[1]), None);
        assert_eq!(numeric_text(&short(false, 0, 0, &[10_000])), None);
        assert_eq!(numeric_text(&[0, 0x80, 1]), None);
    }
}
