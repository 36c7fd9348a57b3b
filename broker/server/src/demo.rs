//! Simulated devices for `tidewire --demo` and `tidewire demo`: each is a
//! real MQTT client that publishes sensor readings as JSON to
//! `demo/sensors/<device>` (QoS 1) and keeps a retained `online`/`offline`
//! status (its last will) on `demo/status/<device>`. The readings drift
//! like real ones: a slow daily swing, a random walk, noise, and a battery
//! that drains.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Devices started by `--demo`.
pub const DEFAULT_DEVICES: usize = 8;
/// Interval between one device's readings.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// Wait before a device reconnects after losing the broker.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Where the devices connect, and how many there are.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Broker host.
    pub host: String,
    /// Broker MQTT port.
    pub port: u16,
    /// Number of devices.
    pub devices: usize,
    /// Interval between readings, per device.
    pub interval: Duration,
    /// Credentials, when the broker requires them.
    pub credentials: Option<(String, String)>,
}

/// One reading, as published.
#[derive(Debug, Serialize)]
struct Reading<'a> {
    device: &'a str,
    /// Degrees Celsius.
    temp: f64,
    /// Relative humidity, percent.
    humidity: f64,
    /// Battery voltage.
    battery: f64,
    /// Device clock, ms since the Unix epoch.
    t: u64,
}

/// A small deterministic generator (xorshift64*): plenty for fake sensor
/// noise, no dependency.
struct Noise(u64);

impl Noise {
    /// A value in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// A simulated sensor's state.
struct Sensor {
    name: String,
    base_temp: f64,
    drift: f64,
    battery: f64,
    noise: Noise,
}

impl Sensor {
    fn new(index: usize) -> Sensor {
        let mut noise =
            Noise(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
        Sensor {
            name: format!("sensor-{:02}", index + 1),
            base_temp: 19.0 + 4.0 * noise.next(),
            drift: 0.0,
            battery: 3.9 + 0.2 * noise.next(),
            noise,
        }
    }

    fn read(&mut self, now_ms: u64) -> Reading<'_> {
        let day = (now_ms % 86_400_000) as f64 / 86_400_000.0;
        let swing = 3.0 * (day * std::f64::consts::TAU).sin();
        self.drift = (self.drift + 0.05 * self.noise.next()).clamp(-2.0, 2.0);
        let temp = self.base_temp + swing + self.drift + 0.1 * self.noise.next();
        let humidity = (55.0 - 1.5 * (temp - 20.0) + 2.0 * self.noise.next()).clamp(5.0, 95.0);
        self.battery = (self.battery - 0.0001).max(3.3);
        Reading {
            device: &self.name,
            temp: round(temp, 2),
            humidity: round(humidity, 1),
            battery: round(self.battery, 3),
            t: now_ms,
        }
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the devices until `shutdown`.
pub async fn run(settings: DemoSettings, shutdown: CancellationToken) {
    tracing::info!(
        devices = settings.devices,
        host = %settings.host,
        port = settings.port,
        "demo devices publishing to demo/sensors/+"
    );
    let devices: Vec<_> = (0..settings.devices)
        .map(|i| tokio::spawn(device(Sensor::new(i), settings.clone(), shutdown.clone())))
        .collect();
    for device in devices {
        let _ = device.await;
    }
}

async fn device(mut sensor: Sensor, settings: DemoSettings, shutdown: CancellationToken) {
    let status = format!("demo/status/{}", sensor.name);
    let topic = format!("demo/sensors/{}", sensor.name);
    let mut options = MqttOptions::new(
        format!("demo-{}", sensor.name),
        settings.host.clone(),
        settings.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_last_will(LastWill::new(
        &status,
        r#"{"state":"offline"}"#,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some((user, password)) = &settings.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let connection = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.poll() => match event {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) if ack.code != rumqttc::ConnectReturnCode::Success => {
                            tracing::warn!(code = ?ack.code, "demo device refused; give it credentials or allow anonymous access");
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "demo device lost the broker; reconnecting");
                            tokio::time::sleep(RECONNECT_DELAY).await;
                        }
                    }
                }
            }
        }
    });
    let _ = client
        .publish(&status, QoS::AtLeastOnce, true, r#"{"state":"online"}"#)
        .await;
    let mut tick = tokio::time::interval(settings.interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let reading = serde_json::to_vec(&sensor.read(now_ms())).unwrap_or_default();
                if client.publish(&topic, QoS::AtLeastOnce, false, reading).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.disconnect().await;
    let _ = connection.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_look_like_sensors() {
        let mut sensor = Sensor::new(0);
        let mut temps = Vec::new();
        for i in 0..1000 {
            let reading = sensor.read(1_800_000_000_000 + i * 500);
            assert_eq!(reading.device, "sensor-01");
            assert!((5.0..=35.0).contains(&reading.temp), "{}", reading.temp);
            assert!((5.0..=95.0).contains(&reading.humidity));
            assert!((3.3..=4.2).contains(&reading.battery));
            temps.push(reading.temp);
        }
        let (min, max) = temps
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
        assert!(max - min > 0.1, "readings vary");
        assert!(max - min < 10.0, "but stay plausible");
    }
}
