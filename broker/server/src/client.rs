//! `tidewire pub` and `tidewire sub`: small MQTT clients in the manner of
//! mosquitto_pub and mosquitto_sub, built on rumqttc (MQTT 3.1.1).

use std::io::Write;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::cli::{ClientArgs, PubArgs, SubArgs};

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached or closed the connection.
    #[error("MQTT connection to {addr}: {reason}")]
    Connection { addr: String, reason: String },
    /// The broker refused the request.
    #[error("{0}")]
    Refused(String),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

fn options(args: &ClientArgs, prefix: &str) -> MqttOptions {
    let id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("{prefix}-{}", std::process::id()));
    let mut options = MqttOptions::new(id, args.host.clone(), args.port);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some(user) = &args.username {
        options.set_credentials(user.clone(), args.password.clone().unwrap_or_default());
    }
    options
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn connection_error(args: &ClientArgs, reason: impl ToString) -> ClientError {
    ClientError::Connection {
        addr: format!("{}:{}", args.host, args.port),
        reason: reason.to_string(),
    }
}

/// Publishes one message and returns once the broker has acknowledged it
/// (QoS 1/2) or it has been sent (QoS 0).
pub async fn publish(args: &PubArgs) -> Result<(), ClientError> {
    let (client, mut events) = AsyncClient::new(options(&args.client, "tidewire-pub"), 10);
    client
        .publish(
            args.topic.clone(),
            qos(args.client.qos),
            args.retain,
            args.message.clone().into_bytes(),
        )
        .await
        .map_err(|e| connection_error(&args.client, e))?;
    loop {
        let event = events
            .poll()
            .await
            .map_err(|e| connection_error(&args.client, e))?;
        let done = match (args.client.qos, event) {
            (_, Event::Incoming(Packet::ConnAck(ack)))
                if ack.code != rumqttc::ConnectReturnCode::Success =>
            {
                return Err(ClientError::Refused(format!(
                    "connection refused: {:?}",
                    ack.code
                )));
            }
            (0, Event::Outgoing(Outgoing::Publish(_))) => true,
            (1, Event::Incoming(Packet::PubAck(_))) => true,
            (2, Event::Incoming(Packet::PubComp(_))) => true,
            _ => false,
        };
        if done {
            let _ = client.disconnect().await;
            return Ok(());
        }
    }
}

/// Subscribes and writes each message's payload (with `verbose`, its
/// topic first) as a line to `out`, until `count` messages or an error.
pub async fn subscribe(args: &SubArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let (client, mut events) = AsyncClient::new(options(&args.client, "tidewire-sub"), 100);
    client
        .subscribe(args.filter.clone(), qos(args.client.qos))
        .await
        .map_err(|e| connection_error(&args.client, e))?;
    let mut seen = 0;
    loop {
        let event = events
            .poll()
            .await
            .map_err(|e| connection_error(&args.client, e))?;
        match event {
            Event::Incoming(Packet::ConnAck(ack))
                if ack.code != rumqttc::ConnectReturnCode::Success =>
            {
                return Err(ClientError::Refused(format!(
                    "connection refused: {:?}",
                    ack.code
                )));
            }
            Event::Incoming(Packet::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                return Err(ClientError::Refused(format!(
                    "subscription to {} refused",
                    args.filter
                )));
            }
            Event::Incoming(Packet::Publish(publish)) => {
                if args.verbose {
                    write!(out, "{} ", publish.topic)?;
                }
                out.write_all(&publish.payload)?;
                writeln!(out)?;
                out.flush()?;
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    let _ = client.disconnect().await;
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}
