//! Parameter initialisers, seeded so a model built twice starts from the same weights.

use kiln_ir::Rng;

/// How a parameter's initial values are drawn. `fan_in`/`fan_out` come from the
/// parameter's shape: for a `[in, out]` weight matrix they are `in` and `out`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element zero (biases).
    Zeros,
    /// Every element the given value.
    Constant(f32),
    /// Glorot/Xavier uniform: `U(-a, a)` with `a = sqrt(6 / (fan_in + fan_out))`.
    GlorotUniform,
    /// He/Kaiming normal for ReLU layers: `N(0, 2 / fan_in)`.
    HeNormal,
    /// He/Kaiming uniform: `U(-a, a)` with `a = sqrt(6 / fan_in)`.
    HeUniform,
    /// `N(0, std^2)`.
    Normal { std: f32 },
}

/// `(fan_in, fan_out)` of a parameter shape: the last two axes of a matrix (with any
/// leading axes as receptive-field size), or the length of a vector.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [.., fan_in, fan_out] => {
            let field: usize = shape[..shape.len() - 2].iter().product();
            (fan_in * field, fan_out * field)
        }
    }
}

impl Init {
    /// Draws `count` values for a parameter of the given shape.
    pub fn sample(self, shape: &[usize], rng: &mut Rng) -> Vec<f32> {
        let count: usize = shape.iter().product();
        let (fan_in, fan_out) = fans(shape);
        let uniform = |rng: &mut Rng, limit: f64| -> Vec<f32> {
            (0..count)
                .map(|_| rng.uniform(-limit, limit) as f32)
                .collect()
        };
        let normal = |rng: &mut Rng, std: f64| -> Vec<f32> {
            (0..count).map(|_| (rng.normal() * std) as f32).collect()
        };
        match self {
            Init::Zeros => vec![0.0; count],
            Init::Constant(value) => vec![value; count],
            Init::GlorotUniform => uniform(rng, (6.0 / (fan_in + fan_out) as f64).sqrt()),
            Init::HeNormal => normal(rng, (2.0 / fan_in as f64).sqrt()),
            Init::HeUniform => uniform(rng, (6.0 / fan_in as f64).sqrt()),
            Init::Normal { std } => normal(rng, f64::from(std)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glorot_uniform_stays_within_its_limit() {
        let values = Init::GlorotUniform.sample(&[64, 128], &mut Rng::new(1));
        let limit = (6.0f32 / 192.0).sqrt();
        assert_eq!(values.len(), 64 * 128);
        assert!(values.iter().all(|v| v.abs() <= limit));
        let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            max > 0.9 * limit,
            "samples should fill the range, max {max}"
        );
    }

    #[test]
    fn he_normal_has_variance_two_over_fan_in() {
        let values = Init::HeNormal.sample(&[100, 200], &mut Rng::new(2));
        let var = values.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / values.len() as f64;
        assert!((var - 0.02).abs() < 0.002, "variance {var}");
    }

    #[test]
    fn same_seed_gives_same_weights() {
        let a = Init::HeUniform.sample(&[3, 5], &mut Rng::new(9));
        let b = Init::HeUniform.sample(&[3, 5], &mut Rng::new(9));
        assert_eq!(a, b);
        assert_eq!(Init::Zeros.sample(&[4], &mut Rng::new(9)), vec![0.0; 4]);
    }
}
