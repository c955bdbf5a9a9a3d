//! `report.html`: one self-contained page (inline SVG, no external assets) with the metrics,
//! the training curves and base-vs-tuned generations side by side.

use serde::Serialize;

/// Losses of one model on the test split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub loss: f64,
    pub perplexity: f64,
}

impl Scores {
    pub fn from_loss(loss: f64) -> Self {
        Scores {
            loss,
            perplexity: loss.exp(),
        }
    }
}

/// One prompt and what each model made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub prompt: String,
    pub base: String,
    pub tuned: String,
}

/// `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalMetrics {
    pub base_model: String,
    pub test_samples: usize,
    pub test_tokens: usize,
    pub base: Scores,
    pub tuned: Scores,
    pub samples: Vec<Sample>,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the report. `curves` are complete SVG documents (the training loss and lr plots).
pub fn render(metrics: &EvalMetrics, curves: &[String]) -> String {
    let better = metrics.tuned.loss < metrics.base.loss;
    let verdict = if better {
        format!(
            "The fine-tuned model lowers the test loss by {:.4} nats per token.",
            metrics.base.loss - metrics.tuned.loss
        )
    } else {
        "The fine-tuned model does <strong>not</strong> lower the test loss.".to_owned()
    };
    let samples: String = metrics
        .samples
        .iter()
        .map(|s| {
            format!(
                "<tr><td><pre>{}</pre></td><td><pre>{}</pre></td><td><pre>{}</pre></td></tr>\n",
                escape(&s.prompt),
                escape(&s.base),
                escape(&s.tuned)
            )
        })
        .collect();
    // An SVG document's XML prologue is not allowed inside HTML; the <svg> element is.
    let curves: String = curves
        .iter()
        .map(|svg| {
            svg.find("<svg").map_or(String::new(), |i| {
                format!("<figure>{}</figure>\n", &svg[i..])
            })
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tigerflow eval: {title}</title>\n\
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse;width:100%}}\
td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}}pre{{white-space:pre-wrap;margin:0}}figure{{margin:1em 0}}</style>\n\
</head><body>\n<h1>Evaluation of the adapter for {title}</h1>\n<p>{verdict}</p>\n\
<table><tr><th>model</th><th>test loss (mean token NLL)</th><th>perplexity</th></tr>\n\
<tr><td>base</td><td>{bl:.4}</td><td>{bp:.2}</td></tr>\n<tr><td>fine-tuned</td><td>{tl:.4}</td><td>{tp:.2}</td></tr></table>\n\
<p>{n} test conversations, {tokens} target tokens.</p>\n<h2>Training curves</h2>\n{curves}\
<h2>Generations (greedy)</h2>\n<table><tr><th>prompt</th><th>base</th><th>fine-tuned</th></tr>\n{samples}</table>\n</body></html>\n",
        title = escape(&metrics.base_model),
        bl = metrics.base.loss,
        bp = metrics.base.perplexity,
        tl = metrics.tuned.loss,
        tp = metrics.tuned.perplexity,
        n = metrics.test_samples,
        tokens = metrics.test_tokens,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_self_contained_and_escaped() {
        let metrics = EvalMetrics {
            base_model: "m".into(),
            test_samples: 2,
            test_tokens: 10,
            base: Scores::from_loss(2.0),
            tuned: Scores::from_loss(1.5),
            samples: vec![Sample {
                prompt: "### A: <hi>".into(),
                base: "x & y".into(),
                tuned: "z".into(),
            }],
        };
        let html = render(
            &metrics,
            &["<?xml version=\"1.0\"?><svg><path/></svg>".into()],
        );
        assert!(html.contains("&lt;hi&gt;") && html.contains("x &amp; y"));
        assert!(html.contains("<figure><svg><path/></svg></figure>"));
        assert!(!html.contains("<?xml"));
        assert!(!html.contains("src=\"http"), "no external assets");
        assert!(html.contains("lowers the test loss by 0.5000"));
    }
}
