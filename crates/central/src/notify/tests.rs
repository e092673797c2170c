use super::*;

#[cfg(unix)]
#[tokio::test]
async fn the_notification_log_with_phone_numbers_is_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sender = LogFileSender {
        path: dir.path().join("logs/notifications.log"),
    };
    let notification = Notification {
        id: "n1".into(),
        account: "A1".into(),
        kind: "low_balance".into(),
        message: "Balance low".into(),
        created_at: chrono::Utc::now(),
        to: "+919800000001".into(),
        language: Language::English,
        dlt_template_id: None,
        parts: 1,
    };
    assert_eq!(
        sender.send(&notification).await,
        Outcome::Sent { provider_id: None }
    );
    let mode = std::fs::metadata(&sender.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}
