//! Medians and ratios for reports.
//!
//! Repetitions of a run are summarised by their median (robust to one run disturbed by other load on
//! the machine), and every figure is also given relative to the baseline allocator measured in the
//! same invocation.

/// The median of `xs` (the mean of the middle two for an even count), None when empty. NaNs sort last.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `x / base`, or None when the base is zero or either is missing or not finite.
pub fn ratio(x: Option<f64>, base: Option<f64>) -> Option<f64> {
    let (x, b) = (x?, base?);
    let r = x / b;
    (b != 0.0 && r.is_finite()).then_some(r)
}

/// The geometric mean of positive values (the right average for ratios), None when empty or when any
/// value is not positive and finite.
pub fn geomean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
        return None;
    }
    Some((xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(
            median(&[1.0, 100.0, 2.0]),
            Some(2.0),
            "robust to one outlier"
        );
    }

    #[test]
    fn geometric_means() {
        assert_eq!(geomean(&[]), None);
        assert!((geomean(&[2.0, 0.5]).unwrap() - 1.0).abs() < 1e-12);
        assert!((geomean(&[4.0, 1.0]).unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(geomean(&[1.0, 0.0]), None);
        assert_eq!(geomean(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }
}
