//! Energy gate: a cheap speech/silence pre-filter in front of the speech
//! models. Level in dBFS per frame with hysteresis and a hang-over, so word
//! endings are not clipped. Sans-IO, allocation-free.

#[derive(Debug, Clone, Copy)]
pub struct GateConfig {
    /// Opens above this level (dBFS).
    pub open_dbfs: f32,
    /// Closes below this level (dBFS), after `hangover_frames`.
    pub close_dbfs: f32,
    pub hangover_frames: u32,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            open_dbfs: -45.0,
            close_dbfs: -50.0,
            hangover_frames: 15,
        }
    }
}

#[derive(Debug)]
pub struct Gate {
    cfg: GateConfig,
    open: bool,
    quiet_frames: u32,
}

/// RMS level of a frame in dBFS (full scale = 1.0); -120 for digital silence.
pub fn level_dbfs(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let ms = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    if ms <= 1e-12 {
        -120.0
    } else {
        10.0 * ms.log10()
    }
}

impl Gate {
    pub fn new(cfg: GateConfig) -> Self {
        Gate {
            cfg,
            open: false,
            quiet_frames: 0,
        }
    }

    /// Feed one frame; true while the gate is open (audio worth analysing).
    pub fn push(&mut self, frame: &[f32]) -> bool {
        let db = level_dbfs(frame);
        if db >= self.cfg.open_dbfs {
            self.open = true;
            self.quiet_frames = 0;
        } else if self.open && db < self.cfg.close_dbfs {
            self.quiet_frames += 1;
            if self.quiet_frames > self.cfg.hangover_frames {
                self.open = false;
            }
        } else if self.open {
            self.quiet_frames = 0;
        }
        self.open
    }

    pub fn is_open(&self) -> bool {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_dbfs(&[0.0; 160]), -120.0);
        let full: Vec<f32> = (0..160)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(level_dbfs(&full).abs() < 0.01);
        assert!((level_dbfs(&[0.01; 160]) + 40.0).abs() < 0.01);
    }

    #[test]
    fn opens_on_speech_level_holds_then_closes() {
        let mut g = Gate::new(GateConfig::default());
        assert!(!g.push(&[0.001; 320])); // -60 dBFS line noise
        assert!(g.push(&[0.1; 320])); // -20 dBFS
        for _ in 0..15 {
            assert!(g.push(&[0.0; 320]), "hang-over keeps it open");
        }
        assert!(!g.push(&[0.0; 320]));
    }

    #[test]
    fn hysteresis_between_thresholds_keeps_state() {
        let mut g = Gate::new(GateConfig::default());
        let between = [0.0045f32; 320]; // about -47 dBFS
        assert!(!g.push(&between));
        g.push(&[0.1; 320]);
        for _ in 0..100 {
            assert!(g.push(&between));
        }
    }
}
