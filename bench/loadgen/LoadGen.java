// A steady load generator for bench/latency.py: the same readings as its Python producer
// (JSON {"stream", "value"}, keyed by stream id, sent in 5 ms ticks), from the Kafka Java client.
// A paced kafka-python producer needs most of a core at 20,000 msg/s; on a small machine it
// competes with the broker and the consumer under test and adds to the tail being measured.
//
//   java -cp 'deploy/kafka/.cache/lib-*/*:DIR' LoadGen BOOTSTRAP TOPIC RATE SECONDS STREAMS
//
// Prints the achieved rate (msg/s) on stdout when done.

import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.Properties;
import java.util.Random;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class LoadGen {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        double rate = Double.parseDouble(args[2]), seconds = Double.parseDouble(args[3]);
        int streams = Integer.parseInt(args[4]);
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("linger.ms", "1"); // as the Python generator
        props.put("acks", "1");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        Random rng = new Random(0);
        long tick = 5_000_000L; // ns
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            long start = System.nanoTime(), sent = 0;
            while (true) {
                long elapsed = System.nanoTime() - start;
                if (elapsed >= seconds * 1e9) break;
                long due = (long) ((elapsed + tick) / 1e9 * rate);
                for (; sent < due; sent++) {
                    String key = String.format("s%05d", sent % streams);
                    String value = String.format(Locale.ROOT, "{\"stream\":\"%s\",\"value\":%.4f}",
                            key, 100.0 + rng.nextGaussian());
                    producer.send(new ProducerRecord<>(topic,
                            key.getBytes(StandardCharsets.UTF_8),
                            value.getBytes(StandardCharsets.UTF_8)));
                }
                long wait = start + (long) (sent / rate * 1e9) - System.nanoTime();
                if (wait > 0) Thread.sleep(wait / 1_000_000L, (int) (wait % 1_000_000L));
            }
            producer.flush();
            System.out.println(sent / ((System.nanoTime() - start) / 1e9));
        }
    }
}
