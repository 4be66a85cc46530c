output "queue_url" {
  description = "EDGEPLAT_ARRIVAL_QUEUE_URL"
  value       = aws_sqs_queue.arrivals.url
}

output "dead_letter_url" {
  description = "EDGEPLAT_ARRIVAL_DLQ_URL"
  value       = aws_sqs_queue.dead_letter.url
}

output "queue_arn" {
  value = aws_sqs_queue.arrivals.arn
}
